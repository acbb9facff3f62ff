"""Names callers choose are checked before they reach Milvus keys or expressions."""

from __future__ import annotations

import pytest

from search_service.errors import InvalidName
from search_service.validation import check_collection_name, check_external_id, check_metadata_key


@pytest.mark.parametrize("name", ["cats", "tenant-42_images", "0abc", "a" * 63])
def test_good_collection_names_pass(name):
    assert check_collection_name(name) == name


@pytest.mark.parametrize("name", ["", "Cats", "-cats", "a" * 64, 'x" or "1', "a/b", "ä"])
def test_bad_collection_names_are_refused_with_the_rule(name):
    with pytest.raises(InvalidName, match="use 1-63 characters from a-z, 0-9, '_' and '-'"):
        check_collection_name(name)


@pytest.mark.parametrize("external_id", ["IMG_0001.jpg", "ünïcödé 写真", "x" * 256,
                                         "https:\\\\host", 'quote"d'])
def test_external_ids_allow_what_callers_use(external_id):
    assert check_external_id(external_id) == external_id


@pytest.mark.parametrize("external_id", ["", "a/b", "tab\there", "x" * 257, "nul\x00"])
def test_bad_external_ids_are_refused(external_id):
    with pytest.raises(InvalidName, match="no '/' and no control characters"):
        check_external_id(external_id)


@pytest.mark.parametrize("key", ["label", "_private", "Camel_9"])
def test_metadata_keys(key):
    assert check_metadata_key(key) == key
    with pytest.raises(InvalidName):
        check_metadata_key(key + '"]')
