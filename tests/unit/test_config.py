from pathlib import Path

from nubis.config import Settings


def test_file_then_environment_override_defaults(tmp_path: Path, monkeypatch):
    cfg = tmp_path / "nubis.toml"
    cfg.write_text('data_dir = "/srv/nubis"\nlisten_port = 9000\ntask_workers = 2\n')
    monkeypatch.setenv("NUBIS_CONFIG", str(cfg))
    monkeypatch.setenv("NUBIS_LISTEN_PORT", "9100")
    settings = Settings()
    assert settings.data_dir == Path("/srv/nubis")  # from the file
    assert settings.listen_port == 9100  # the environment wins over the file
    assert settings.task_workers == 2
    assert settings.db_url == "sqlite:////srv/nubis/nubis.db"


def test_secrets_never_show_in_repr(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("NUBIS_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("NUBIS_SECRET_KEY", "very-secret-value")
    settings = Settings()
    assert "very-secret-value" not in repr(settings)
    assert settings.encryption_key() == b"very-secret-value"


def test_generated_key_is_private_and_stable(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("NUBIS_CONFIG", str(tmp_path / "absent.toml"))
    settings = Settings(data_dir=tmp_path / "data")
    key = settings.encryption_key()
    assert settings.encryption_key() == key
    assert (tmp_path / "data" / "secret.key").stat().st_mode & 0o077 == 0
