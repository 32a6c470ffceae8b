"""Build the service from a project and run it with uvicorn (``lakecdp serve``)."""

from __future__ import annotations

import gc
import logging

from lakecdp.api.app import ApiState, create_app
from lakecdp.api.config import INTAKE_SOURCES, ApiConfig
from lakecdp.api.intake_log import IntakeLog
from lakecdp.config import Project

logger = logging.getLogger(__name__)


def intake_sources(project: Project):
    """The intake's sources as the Kafka stream sees them (JSON objects with the sources' fields)."""
    from lakecdp.ingest.sources import load_sources
    from lakecdp.ingest.stream_config import as_json_messages

    sources = load_sources(project.conf_dir)
    return {name: as_json_messages(sources[name]) for name in INTAKE_SOURCES if name in sources}


def build_state(project: Project, config: ApiConfig) -> ApiState:
    from lakecdp.activation.config import load_destinations
    from lakecdp.api.segments import SegmentReader

    log = IntakeLog(project.path(config.log_dir), segment_bytes=config.segment_bytes)
    return ApiState(
        project, config, intake_sources(project), log, SegmentReader(project), load_destinations(project.conf_dir)
    )


def serve(project: Project, config: ApiConfig, *, host: str | None = None, port: int | None = None) -> None:
    """Run the API until stopped (SIGINT / SIGTERM)."""
    import uvicorn

    state = build_state(project, config)
    app = create_app(state)
    # what start-up built (modules, config, the de-duplication state) lives as long as the
    # process: out of the collector's sight, a full collection no longer walks it (tens of ms
    # with the imports here) in the middle of a request
    gc.collect()
    gc.freeze()
    try:
        # "auto": httptools and uvloop (setup.cfg installs both; uvicorn falls back to h11 and
        # asyncio where they are missing): less CPU per request, which is the intake's tail on a busy box
        uvicorn.run(
            app,
            host=host or config.host,
            port=config.port if port is None else port,
            log_level="warning",
            access_log=False,
            http="auto",
            loop="auto",
        )
    finally:
        state.log.close()
