"""ML Metadata on MySQL/MariaDB from the config's [metadata] section.

The server: the one `.ci/run` starts (TEXTGEN_TEST_MYSQL=host:port, database
textgen_mlmd, user textgen / s3cret; the database is emptied first), else a throwaway
MariaDB (Debian's mariadb-server) started here on a loopback port in a temporary directory.
Without either the tests skip, except under CI=true, where that is a failure.
"""
import os
import shutil
import socket
import subprocess
import time

import pytest

from pipeline import configs, metadata
import textgen_cli

SERVER, INSTALL, CLIENT = "mariadbd", "mariadb-install-db", "mariadb"


def _find(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DATABASE, USER, PASSWORD = "textgen_mlmd", "textgen", "s3cret"


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory):
    given = os.environ.get("TEXTGEN_TEST_MYSQL")
    if given:
        yield _emptied(given)
        return
    if not all(_find(n) for n in (SERVER, INSTALL, CLIENT)):
        message = "MariaDB server not installed (apt-get install mariadb-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; .ci/run installs it and sets TEXTGEN_TEST_MYSQL")
        pytest.skip(message)
    yield from _throwaway_server(tmp_path_factory)


def _emptied(host_port):
    """The CI server's database, dropped and created again: every run starts empty."""
    host, _, port = host_port.rpartition(":")
    assert _find(CLIENT), f"TEXTGEN_TEST_MYSQL={host_port} but no {CLIENT} client installed"
    subprocess.run([_find(CLIENT), "--no-defaults", f"-h{host}", f"-P{port}", f"-u{USER}",
                    f"-p{PASSWORD}", "-e", f"DROP DATABASE IF EXISTS {DATABASE}; "
                    f"CREATE DATABASE {DATABASE}"], check=True, capture_output=True, timeout=60)
    return {"host": host, "port": int(port)}


def _throwaway_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("mariadb")
    data, sock, port = base / "data", str(base / "sock"), _free_port()
    user = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run([_find(INSTALL), "--no-defaults", f"--datadir={data}", "--skip-test-db",
                    "--auth-root-authentication-method=normal", *user],
                   check=True, capture_output=True, timeout=300)
    log = open(base / "server.log", "w")
    server = subprocess.Popen(
        [_find(SERVER), "--no-defaults", f"--datadir={data}", f"--socket={sock}",
         f"--port={port}", "--bind-address=127.0.0.1", "--skip-log-bin",
         "--innodb-buffer-pool-size=32M", f"--pid-file={base / 'pid'}", *user],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        client = [_find(CLIENT), "--no-defaults", "-S", sock, "-uroot"]
        deadline = time.monotonic() + 120
        while subprocess.run(client + ["-e", "SELECT 1"], capture_output=True).returncode:
            assert server.poll() is None, (base / "server.log").read_text()
            assert time.monotonic() < deadline, "MariaDB did not start within 120 s"
            time.sleep(0.3)
        subprocess.run(client + ["-e", "CREATE DATABASE textgen_mlmd; "
                                 "CREATE USER 'textgen'@'127.0.0.1' IDENTIFIED BY 's3cret'; "
                                 "GRANT ALL ON textgen_mlmd.* TO 'textgen'@'127.0.0.1';"],
                       check=True, capture_output=True)
        yield {"host": "127.0.0.1", "port": port}
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def _config_file(mariadb, tmp_path, password_line='mysql_password_env = "TEST_MLMD_PW"'):
    path = tmp_path / "shared.toml"
    path.write_text(f"""
[run]
pipeline_root = "{tmp_path / 'root'}"
serving_dir = "{tmp_path / 'serving'}"
[metadata]
backend = "mysql"
mysql_host = "{mariadb['host']}"
mysql_port = {mariadb['port']}
mysql_database = "textgen_mlmd"
mysql_user = "textgen"
{password_line}
""")
    return str(path)


def test_the_config_connects_ml_metadata_to_mysql(mariadb, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TEST_MLMD_PW", "s3cret")
    config = configs.load(_config_file(mariadb, tmp_path))
    connection = metadata.connection_config(config.metadata, "/unused")
    assert connection.WhichOneof("config") == "mysql"
    assert (connection.mysql.port, connection.mysql.password) == (mariadb["port"], "s3cret")
    # Writable: ML Metadata creates its schema in the database on first use.
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    store = metadata_store.MetadataStore(connection)
    store.put_context_type(metadata_store_pb2.ContextType(name="pipeline_run"))
    assert metadata.pipeline_runs(metadata.open_store("/unused", config.metadata)) == []
    assert textgen_cli.main(["runs", "--config", _config_file(mariadb, tmp_path)]) == 0
    assert "no runs recorded yet" in capsys.readouterr().out


def test_a_wrong_password_is_a_clear_error(mariadb, tmp_path, capsys):
    path = _config_file(mariadb, tmp_path, 'mysql_password = "wrong"\nmysql_password_env = ""')
    assert textgen_cli.main(["runs", "--config", path]) == 2
    err = capsys.readouterr().err
    assert f"mysql://textgen@{mariadb['host']}:{mariadb['port']}/textgen_mlmd" in err
    assert "[metadata]" in err


def test_a_pipeline_run_records_into_mysql(mariadb, tmp_path, monkeypatch, capsys):
    from test_pipeline_e2e import TINY, make_corpus
    monkeypatch.setenv("TEST_MLMD_PW", "s3cret")
    path = _config_file(mariadb, tmp_path)
    corpus = make_corpus(tmp_path / "corpus.txt")
    code = textgen_cli.main(["run", "--config", path, "--data", corpus, "--max-perplexity", "200"]
                            + TINY)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "blessed: yes" in out
    assert not (tmp_path / "root" / "metadata.sqlite").exists()
    assert textgen_cli.main(["runs", "--config", path, "--json"]) == 0
    import json
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["blessed"] and rows[0]["trainer"] == "trained"
