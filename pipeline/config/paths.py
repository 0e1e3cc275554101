"""The one root every path starts from: the project directory.

Importing this module registers the ``${project_root:}`` resolver that ``conf/``
uses, so outputs, the stage cache and the MLflow store land in the project
whatever the working directory.
"""

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"
DEFAULT_STORE = PROJECT_ROOT / "mlflow.db"
DEFAULT_ARTIFACTS = PROJECT_ROOT / "mlruns"
DEFAULT_CACHE = PROJECT_ROOT / ".cache" / "stages"

if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


def resolve_path(path: str | Path) -> Path:
    """An absolute path: relative ones start at the working directory, as on a shell."""
    return Path(path).expanduser().absolute()
