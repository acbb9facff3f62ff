"""imagesearch-export where the [export] extra is not installed (the runtime install)."""

from __future__ import annotations

import subprocess
import sys

# Runs the CLI with torch and open_clip made unimportable, as in an install without [export].
WITHOUT_EXPORT_EXTRA = """
import sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "open_clip", "onnxscript"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
from embedder_service.export.__main__ import main
sys.exit(main(["--random-init", "--out", sys.argv[1]]))
"""


def test_export_without_the_extra_says_how_to_install_it(tmp_path):
    done = subprocess.run([sys.executable, "-c", WITHOUT_EXPORT_EXTRA, str(tmp_path / "out")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "needs the [export] extra" in done.stderr
    assert "pip install 'imagesearch[cpu,export]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
