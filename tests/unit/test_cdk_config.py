"""Stage configuration from cdk.json is typed and refuses unknown stages."""

from __future__ import annotations

import pytest

from cdk.config import load_stage, stage_config


def test_cdk_json_defines_dev_and_prod() -> None:
    assert load_stage("dev").region and load_stage("prod").reserved_concurrency == 200


def test_unknown_stage_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="dev, prod"):
        load_stage("staging")


def test_stage_fields_are_validated() -> None:
    with pytest.raises(ValueError):
        stage_config({"stages": {"dev": {"region": "eu-west-1", "log_retention_days": 0}}})
