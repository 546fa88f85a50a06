from medlatent.curate.salt import patient_salt


def test_salt_file_is_created_once(tmp_path, monkeypatch):
    project = {"salt_env": "MEDLATENT_TEST_SALT", "salt": None}
    monkeypatch.delenv("MEDLATENT_TEST_SALT", raising=False)
    first = patient_salt(project, tmp_path)
    assert first == patient_salt(project, tmp_path)
    assert (tmp_path / ".patient_salt").stat().st_mode & 0o077 == 0
    monkeypatch.setenv("MEDLATENT_TEST_SALT", "from-env")
    assert patient_salt(project, tmp_path) == "from-env"
