"""The shell commands of the docs pages tests/test_docs.py leaves to this module, run as
written by the same harness (which, and how: tests/test_docs.py)."""
from test_docs import block_params, docs_redis, run_block  # noqa: F401 - docs_redis is a fixture


@block_params(pages_here=False)
def test_the_block_runs(page, line, script, tmp_path, bigtable_emulator, gcs_server, docs_redis):
    run_block(page, line, script, tmp_path, gcs_server, docs_redis)
