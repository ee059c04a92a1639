"""S3 through fsspec/s3fs against moto's server on loopback: write, open_level, ingest, errors."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")
pytest.importorskip("s3fs", reason="s3fs is not installed")
boto3 = pytest.importorskip("boto3", reason="boto3 is not installed")

from convpipe.errors import InputError  # noqa: E402
from convpipe.ome import open_level, write_multiscales  # noqa: E402

BUCKET = "convpipe-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client(
        "s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    ).create_bucket(Bucket=BUCKET)
    try:
        yield url
    finally:
        server.stop()


def _options(endpoint: str, key: str = "test", secret: str = "test") -> dict:
    return {"key": key, "secret": secret, "client_kwargs": {"endpoint_url": endpoint}}


def test_write_and_open_level(endpoint: str) -> None:
    so = _options(endpoint)
    data = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    url = f"s3://{BUCKET}/plain.zarr"
    zarr.create_array(store=url, data=data, chunks=(2, 3, 4), storage_options=so, dimension_names=tuple("zyx"))
    arr, axes, info = open_level(url, 0, so)
    assert axes == "zyx" and info is None
    np.testing.assert_array_equal(arr[...], data)

    # an OME-Zarr group with two levels
    gurl = f"s3://{BUCKET}/img.zarr"
    g = zarr.open_group(store=gurl, mode="w", storage_options=so)
    g.create_array("0", data=data, dimension_names=tuple("zyx"))
    g.create_array("1", data=data[:, ::2, ::2], dimension_names=tuple("zyx"))
    write_multiscales(g, "zyx", ["0", "1"], [[1, 1, 1], [1, 2, 2]])
    arr1, axes1, info1 = open_level(gurl, 1, so)
    assert axes1 == "zyx" and info1.paths == ("0", "1")
    np.testing.assert_array_equal(arr1[...], data[:, ::2, ::2])
    with pytest.raises(InputError, match=f"s3://{BUCKET}/img.zarr: level 2 does not exist"):
        open_level(gurl, 2, so)


def test_ingest_to_s3(endpoint: str, tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    from convpipe.errors import OutputExistsError
    from convpipe.ingest import ingest

    so = _options(endpoint)
    data = np.random.default_rng(0).integers(0, 255, size=(5, 20, 30), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "s.tif", data, compression="zlib")
    url = f"s3://{BUCKET}/ingested.zarr"
    ingest([str(tmp_path / "s.tif")], url, chunks=(2, 8, 8), storage_options=so)
    arr, axes, _ = open_level(url, 0, so)
    assert axes == "zyx"
    np.testing.assert_array_equal(arr[...], data)
    with pytest.raises(OutputExistsError, match="already exists"):
        ingest([str(tmp_path / "s.tif")], url, storage_options=so)


def test_missing_bucket_and_key(endpoint: str) -> None:
    so = _options(endpoint)
    with pytest.raises(InputError, match=r"s3://no-such-bucket/a\.zarr: .*bucket 'no-such-bucket' does not exist"):
        open_level("s3://no-such-bucket/a.zarr", 0, so)
    with pytest.raises(InputError, match=rf"s3://{BUCKET}/missing\.zarr: no zarr array or group there"):
        open_level(f"s3://{BUCKET}/missing.zarr", 0, so)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_wrong_credentials(endpoint: str) -> None:
    """With IAM checks on, a wrong secret is refused with a clear error, a right key still works."""
    from moto.core.authorization import enable_iam_authentication

    so = _options(endpoint)
    url = f"s3://{BUCKET}/auth.zarr"
    zarr.create_array(store=url, data=np.ones((4, 4), dtype=np.uint8), storage_options=so)

    # a real IAM key for the "good" side, made while checks are still off
    iam = boto3.client(
        "iam", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    iam.create_user(UserName="reader")
    policy = iam.create_policy(
        PolicyName="s3-all",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        ),
    )
    iam.attach_user_policy(UserName="reader", PolicyArn=policy["Policy"]["Arn"])
    key = iam.create_access_key(UserName="reader")["AccessKey"]

    # the server runs in this process, so moto's switch applies to it; restored on exit
    with enable_iam_authentication():
        good = _options(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
        arr, _, _ = open_level(url, 0, good)
        assert int(arr[...].sum()) == 16
        for bad in (_options(endpoint, key["AccessKeyId"], "wrong-secret"), _options(endpoint, "nobody", "nothing")):
            with pytest.raises(InputError, match=r"auth\.zarr: .*access denied: check the credentials"):
                open_level(url, 0, bad)
