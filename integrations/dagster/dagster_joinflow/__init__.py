"""Dagster assets, sensors and asset checks for joinflow pipelines.

```python
from dagster import Definitions, EnvVar
from dagster_joinflow import JoinflowResource, build_joinflow_assets, build_joinflow_sensor
import my_pipeline

assets = build_joinflow_assets(my_pipeline)
defs = Definitions(
    assets=assets,
    sensors=[build_joinflow_sensor(assets)],
    resources={"joinflow": JoinflowResource(database_url=EnvVar("JOINFLOW_DATABASE_URL"))},
)
```
"""

from .assets import NO_JOB_ERRORS, JoinflowMaterializeConfig, build_joinflow_assets
from .component import JoinflowPipelineComponent
from .resource import JoinflowResource
from .sensor import build_joinflow_sensor
from .translator import DagsterJoinflowTranslator

__version__ = "0.1.0"

__all__ = [
    "NO_JOB_ERRORS",
    "DagsterJoinflowTranslator",
    "JoinflowMaterializeConfig",
    "JoinflowPipelineComponent",
    "JoinflowResource",
    "build_joinflow_assets",
    "build_joinflow_sensor",
]
