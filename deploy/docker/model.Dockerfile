# syntax=docker/dockerfile:1
# An embedder image with a model bundle baked in: immutable, starts without network or volumes.
# The build context is the bundle folder that imagesearch-export wrote:
#   imagesearch-export --model ViT-B-32 --pretrained openai --out models/ViT-B-32-openai
#   docker build -f deploy/docker/model.Dockerfile \
#     --build-arg EMBEDDER_IMAGE=imagesearch-embedder:0.1.0-gpu \
#     -t imagesearch-embedder:0.1.0-gpu-vit-b-32-openai models/ViT-B-32-openai
ARG EMBEDDER_IMAGE=imagesearch-embedder:0.1.0-gpu
# checkov:skip=CKV_DOCKER_7: the base is a build argument; its default carries a version tag
# checkov:skip=CKV_DOCKER_2: the embedder base image's HEALTHCHECK applies unchanged
FROM ${EMBEDDER_IMAGE}
# Owned by root, so the service user (10001) can read the model but never change it.
COPY --chown=0:0 . /opt/imagesearch/model
ENV EMBEDDER_BUNDLE=/opt/imagesearch/model
USER 10001:10001
