"""The store: migrations keep data across upgrades, and the secrets key guards private keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from certwatch.service import Service
from certwatch.store import MIGRATIONS, KeyBox, make_engine, migrate
from tests.certfactory import issue
from tests.conftest import make_config


def test_migrations_reach_head_and_keep_data(tmp_path: Path, store_url: str) -> None:
    """Starting twice on one store re-applies nothing and keeps every row."""
    first = Service(make_config(tmp_path, store_url))
    leaf = issue("a.example.com")
    cid = first.call(
        "UploadCertificate",
        {
            "CertificateName": "a",
            "CertificateType": "Server",
            "Certificate": leaf.chain_pem,
            "PrivateKey": leaf.key_pem,
        },
    )["CertificateId"]
    first.close()
    second = Service(make_config(tmp_path, store_url))
    assert second.call("GetCertificate", {"CertificateId": cid})["Certificate"]["Fingerprint"] == (
        leaf.fingerprint
    )
    script = ScriptDirectory.from_config(_alembic())
    with second.engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        assert version == script.get_current_head()
        assert "certificates" in inspect(conn).get_table_names()
    second.close()


def _alembic() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def test_models_match_migrations(tmp_path: Path) -> None:
    """The migrated schema has every table and column the models declare (no missed migration)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


def test_key_file_created_0600_and_wrong_key_is_explained(tmp_path: Path) -> None:
    """The secrets key is created mode 0600 once; a different key cannot open stored keys."""
    box = KeyBox.from_file(tmp_path / "k")
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    sealed = box.seal("secret")
    assert KeyBox.from_file(tmp_path / "k").open(sealed) == "secret"
    with pytest.raises(RuntimeError, match="secrets.key_file"):
        KeyBox.from_file(tmp_path / "other").open(sealed)
