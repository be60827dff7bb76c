"""Where the course lives online: the one place that names the repository (README and notebook badges use it)."""
from __future__ import annotations

REPO_URL = "https://github.com/qlora-memory-lab/qlora-memory-lab"
BRANCH = "main"


def _owner_repo(url: str = REPO_URL) -> str:
    prefix = "https://github.com/"
    if not url.startswith(prefix):
        raise ValueError(f"REPO_URL must start with {prefix}, got {url!r}")
    parts = url[len(prefix):].strip("/").removesuffix(".git").split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"REPO_URL must look like {prefix}<owner>/<repo>, got {url!r}")
    return "/".join(parts)


def colab_url(path: str, branch: str = BRANCH) -> str:
    """The address that opens a notebook of this repository in Colab, e.g. colab_url("notebooks/01_memory.ipynb")."""
    if not isinstance(path, str) or not path.strip("/ "):
        raise ValueError(f"path must be a file path inside the repository, got {path!r}")
    return f"https://colab.research.google.com/github/{_owner_repo()}/blob/{branch}/{path.strip().lstrip('/')}"


def badge_markdown(path: str, branch: str = BRANCH) -> str:
    """The "Open in Colab" badge for a notebook, as Markdown."""
    return f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(path, branch)})"
