"""A real S3-compatible server on 127.0.0.1 (moto's standalone server, in its own process) for object-storage
paths: the adapter store's conditional claims, uploads and pointer writes go over HTTP exactly as to AWS.

Clients find it through the standard variables (`AWS_ENDPOINT_URL` and credentials), which both boto3 and
pyarrow's S3 filesystem read; `env()` returns them for a child process, `apply(monkeypatch)` for this one.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from core.net import free_port
from tests.ports import wait_listening


class S3Server:
    """One moto server process; `bucket(name)` creates a bucket and returns its s3:// URI."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def apply(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for key, value in self.env().items():
            monkeypatch.setenv(key, value)

    def start(self, timeout_s: float = 60) -> S3Server:
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.proc, self.port, timeout_s, "moto server")
        return self

    def bucket(self, name: str) -> str:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, **_creds(self.env())).create_bucket(Bucket=name)
        return f"s3://{name}"

    def stop(self) -> None:
        """End the process we started (by its id)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _creds(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }
