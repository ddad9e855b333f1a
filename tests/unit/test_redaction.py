"""Passwords never reach the terminal in any DSN form PostgreSQL or Redis accepts."""

import pytest

from cluster.redaction import redacted


@pytest.mark.parametrize(
    "dsn, expected",
    [
        ("postgresql://app:s3cret@db:5432/dicomflow", "postgresql://app:***@db:5432/dicomflow"),
        ("postgresql://app:p%40ss@db/x", "postgresql://app:***@db/x"),
        ("postgresql://app@db/x?password=s3cret&sslmode=require", "postgresql://app@db/x?password=***&sslmode=require"),
        ("host=db port=5432 user=app password=s3cret dbname=x", "host=db port=5432 user=app password=*** dbname=x"),
        ("host=db password='two words\\' here' dbname=x", "host=db password=*** dbname=x"),
        ("host=db PASSWORD = s3cret", "host=db PASSWORD=***"),
        ("redis://:s3cret@127.0.0.1:16379/0", "redis://:***@127.0.0.1:16379/0"),
        ("redis://127.0.0.1:16379/0", "redis://127.0.0.1:16379/0"),
    ],
)
def test_passwords_are_hidden(dsn: str, expected: str) -> None:
    assert redacted(dsn) == expected
    assert "s3cret" not in redacted(dsn)
