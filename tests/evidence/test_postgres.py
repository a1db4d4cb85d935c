"""The decision log on a real PostgreSQL server: a throwaway cluster (initdb/pg_ctl on a temporary
folder, unix socket only), `tierwise db upgrade`, two workers writing under load, feedback, report."""

import pytest

from tools import reliability
from tools.tiny_model import write_model_folder

pytestmark = pytest.mark.slow


def test_two_workers_write_every_decision_once_and_feedback_and_report_read_them(tmp_path):
    if reliability.postgres_binaries() is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin: "
            "install them with `apt-get install -y postgresql` (.ci/run does)"
        )
    pytest.importorskip("psycopg", reason="the postgres extra is not installed: make install")
    model_dir = write_model_folder(tmp_path / "tiny")
    result = reliability.postgres_case(model_dir, tmp_path, requests=300, workers=2, feedback=20)
    print(result)
    assert result.passed, str(result)
    assert "300 decisions written of 300 sent (0 lost, 0 duplicated)" in result.figures
    assert "feedback joined 20/20; tierwise report read 300" in result.figures
