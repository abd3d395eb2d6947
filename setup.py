"""Build hook: ship the default data (``data/*.xyz`` of the checkout) inside the package.

Everything else is in ``setup.cfg``. A wheel gets ``gapkit/_data/*.xyz`` (found by
:func:`gapkit.data.default_data_dir`); an editable install reads ``data/`` itself.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA = Path(__file__).resolve().parent / "data"


class BuildWithData(build_py):
    """``build_py`` that also copies ``data/*.xyz`` and ``data/README.md`` to
    ``gapkit/_data``."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "gapkit" / "_data"
        self.mkpath(str(target))
        for src in sorted(DATA.glob("*.xyz")) + [DATA / "README.md"]:
            if src.is_file():
                self.copy_file(str(src), str(target / src.name))


setup(cmdclass={"build_py": BuildWithData})
