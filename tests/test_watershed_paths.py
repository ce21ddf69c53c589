"""The watershed info through every path form cloud-volume users write, and its one-line errors.

Backends: a local folder, s3 (moto), gs (fake-gcs-server), http and https (a local
http.server in a thread; https with a self-signed certificate trusted through
REQUESTS_CA_BUNDLE).
"""
import datetime
import functools
import gzip
import http.server
import ipaddress
import json
import ssl
import threading
import time

import cloudfiles.interfaces
import cloudfiles.paths
import pytest
from cloudfiles import CloudFiles

from beam_ingest.errors import InputError
from beam_ingest.inputs.watershed import WatershedInfo, read_watershed_info

INFO = {
    "type": "segmentation", "data_type": "uint64", "num_channels": 1,
    "scales": [
        {"key": "8_8_40", "size": [128, 96, 64], "voxel_offset": [16, 32, 8], "resolution": [8, 8, 40],
         "chunk_sizes": [[64, 64, 32]], "encoding": "compressed_segmentation",
         "compressed_segmentation_block_size": [8, 8, 8]},
        {"key": "16_16_40", "size": [64, 48, 64], "voxel_offset": [8, 16, 8], "resolution": [16, 16, 40],
         "chunk_sizes": [[64, 64, 32]], "encoding": "compressed_segmentation",
         "compressed_segmentation_block_size": [8, 8, 8]},
    ],
}
MIP0 = WatershedInfo((16, 32, 8), (128, 96, 64), (8.0, 8.0, 40.0))
MIP1 = WatershedInfo((8, 16, 8), (64, 48, 64), (16.0, 16.0, 40.0))
_count = iter(range(10**6))


def _put(url, name, data: bytes, gzipped=False):
    if gzipped:  # stored compressed, with Content-Encoding: gzip
        CloudFiles(url).put(name, data, compress="gzip")
    else:
        CloudFiles(url).put(name, data, raw=True, compress=None)


def _read_both(path):
    return read_watershed_info(path), read_watershed_info(path, mip=1)


def _one_line_error(path, mip=0, match=None) -> str:
    with pytest.raises(InputError) as caught:
        read_watershed_info(path, mip)
    message = str(caught.value)
    assert "\n" not in message and "\x1b" not in message, message
    assert message.startswith(f"watershed info {path.rstrip('/')}/info: "), message
    if match:
        assert __import__("re").search(match, message), message
    return message


# ---- servers -------------------------------------------------------------------------------------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(root, context=None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=root))
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def web_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    (root / "ws").mkdir()
    (root / "ws" / "info").write_text(json.dumps(INFO))
    return root


@pytest.fixture(scope="module")
def http_url(web_root):
    server = _serve(str(web_root))
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _self_signed(folder):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


@pytest.fixture(scope="module")
def https_server(web_root, tmp_path_factory):
    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = _serve(str(web_root), context)
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


@pytest.fixture
def https_url(https_server, monkeypatch):
    url, cert = https_server
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)  # requests reads it on every request
    return url


@pytest.fixture
def s3_endpoint(s3_server, monkeypatch):
    """moto's endpoint for plain s3:// paths (boto3 reads AWS_ENDPOINT_URL_S3 when it makes a client)."""
    endpoint = cloudfiles.paths.ALIASES["locals3"].removeprefix("s3://").rstrip("/")
    bucket = s3_server.removeprefix("locals3://")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    cloudfiles.interfaces.reset_connection_pools()
    yield endpoint, bucket
    cloudfiles.interfaces.reset_connection_pools()  # no pooled s3:// client keeps pointing at moto


@pytest.fixture
def through_cloudvolume(monkeypatch):
    """Fail if the info is read by hand (the fallback for infos CloudVolume rejects) instead of by CloudVolume."""
    import beam_ingest.inputs.watershed as watershed

    def read_by_hand(cloudpath, where):
        raise AssertionError(f"{cloudpath} was read by hand, not by CloudVolume")
    monkeypatch.setattr(watershed, "_read_raw_info", read_by_hand)


# ---- every path form gives the same info -------------------------------------------------------------------------

def test_local_paths(tmp_path, monkeypatch, through_cloudvolume):
    _put("file://" + str(tmp_path / "ws"), "info", json.dumps(INFO).encode())
    local = str(tmp_path / "ws")
    for path in (local, local + "/", "file://" + local, "precomputed://file://" + local, "precomputed://" + local,
                 local + "|neuroglancer-precomputed:"):
        assert _read_both(path) == (MIP0, MIP1), path
    monkeypatch.chdir(tmp_path)
    assert _read_both("ws") == (MIP0, MIP1)
    assert _read_both("./ws") == (MIP0, MIP1)


def test_s3_paths(s3_server, s3_endpoint, through_cloudvolume):
    endpoint, bucket = s3_endpoint
    prefix = f"ws-{next(_count)}"
    _put(f"{s3_server}/{prefix}", "info", json.dumps(INFO).encode(), gzipped=True)
    for path in (f"s3://{bucket}/{prefix}", f"precomputed://s3://{bucket}/{prefix}",
                 f"{s3_server}/{prefix}", f"precomputed://{s3_server}/{prefix}",
                 f"s3://{endpoint}/{bucket}/{prefix}",  # cloud-files' endpoint-in-path form
                 f"precomputed://s3://{endpoint}/{bucket}/{prefix}"):
        assert _read_both(path) == (MIP0, MIP1), path


def test_gs_paths(gcs_server, through_cloudvolume):
    url = f"{gcs_server}/ws-{next(_count)}"
    _put(url, "info", json.dumps(INFO).encode(), gzipped=True)
    for path in (url, url + "/", "precomputed://" + url, url + "|neuroglancer-precomputed:"):
        assert _read_both(path) == (MIP0, MIP1), path


def test_http_paths(http_url, through_cloudvolume):
    for path in (f"{http_url}/ws", f"precomputed://{http_url}/ws"):
        assert _read_both(path) == (MIP0, MIP1), path


def test_https_paths(https_url, through_cloudvolume):
    for path in (f"{https_url}/ws", f"precomputed://{https_url}/ws"):
        assert _read_both(path) == (MIP0, MIP1), path


def test_redirect_is_followed(tmp_path, gcs_server, through_cloudvolume):
    target = f"{gcs_server}/ws-{next(_count)}"
    _put(target, "info", json.dumps(INFO).encode())
    _put("file://" + str(tmp_path / "link"), "info", json.dumps({"redirect": target}).encode())
    assert _read_both(str(tmp_path / "link")) == (MIP0, MIP1)


def test_info_without_cloudvolume_only_keys(tmp_path, gcs_server):
    """An info with bounds and resolution but no `key` (CloudVolume needs one) still gives its bounds."""
    minimal = {"scales": [{k: s[k] for k in ("size", "voxel_offset", "resolution")} for s in INFO["scales"]]}
    _put("file://" + str(tmp_path / "ws"), "info", json.dumps(minimal).encode())
    assert _read_both(str(tmp_path / "ws")) == (MIP0, MIP1)
    url = f"{gcs_server}/minimal-{next(_count)}"
    _put(url, "info", json.dumps(minimal).encode(), gzipped=True)
    assert _read_both(url) == (MIP0, MIP1)


# ---- errors: one line, naming the path -----------------------------------------------------------------------------

def _broken_infos():
    scale = dict(INFO["scales"][0])
    no_offset = {k: v for k, v in scale.items() if k != "voxel_offset"}
    return {
        "not json": (b"{not json", r"not valid JSON"),
        "a list": (b"[1, 2]", r"must be a JSON object"),
        "no scales": (json.dumps({"type": "segmentation"}).encode(), r"missing key 'scales'"),
        "empty scales": (json.dumps({**INFO, "scales": []}).encode(), r"'scales' is empty"),
        "no voxel_offset": (json.dumps({**INFO, "scales": [no_offset]}).encode(), r"missing key 'voxel_offset'"),
        "size of two": (json.dumps({**INFO, "scales": [{**scale, "size": [1, 2]}]}).encode(),
                        r"scales\[0\]\.size must be a list of 3 numbers"),
        "zero size": (json.dumps({**INFO, "scales": [{**scale, "size": [0, 2, 3]}]}).encode(),
                      r"scales\[0\]\.size must be positive, got \[0, 2, 3\]"),
        "size not numbers": (json.dumps({**INFO, "scales": [{**scale, "size": ["a", 2, 3]}]}).encode(),
                             r"malformed watershed info"),
        "JSON null": (b"null", r"must be a JSON object"),
    }


@pytest.mark.parametrize("case", list(_broken_infos()))
def test_broken_info_local(case, tmp_path):
    data, match = _broken_infos()[case]
    _put("file://" + str(tmp_path / "ws"), "info", data)
    _one_line_error(str(tmp_path / "ws"), match=match)
    _one_line_error("precomputed://file://" + str(tmp_path / "ws"), match=match)


def test_broken_info_gs(gcs_server):
    for case, (data, match) in _broken_infos().items():
        for gzipped in (False, True):
            url = f"{gcs_server}/broken-{next(_count)}"
            _put(url, "info", data, gzipped=gzipped)
            _one_line_error(url, match=match)


def test_mip_past_the_scales(tmp_path, gcs_server):
    _put("file://" + str(tmp_path / "ws"), "info", json.dumps(INFO).encode())
    _one_line_error(str(tmp_path / "ws"), mip=2, match=r"CV_MIP=2 but the info has 2 scale\(s\)")
    url = f"{gcs_server}/ws-{next(_count)}"
    _put(url, "info", json.dumps(INFO).encode())
    _one_line_error("precomputed://" + url, mip=5, match=r"CV_MIP=5 but the info has 2 scale\(s\)")


def test_missing_info_everywhere(tmp_path, s3_server, s3_endpoint, gcs_server, http_url, https_url):
    endpoint, bucket = s3_endpoint
    for path in (str(tmp_path / "nothing"), "file://" + str(tmp_path / "nothing"),
                 f"s3://{bucket}/nothing", f"{s3_server}/nothing", f"s3://{endpoint}/{bucket}/nothing",
                 f"{gcs_server}/nothing", f"precomputed://{gcs_server}/nothing",
                 f"{http_url}/nothing", f"{https_url}/nothing"):
        start = time.monotonic()
        _one_line_error(path, match=r"not found \(data_source\.WATERSHED must name a precomputed segmentation\)")
        # Without precomputed:// CloudVolume retries a missing info as zarr: ~20 s on fake-gcs-server.
        assert time.monotonic() - start < 5, path


def test_redirect_to_nowhere(tmp_path):
    _put("file://" + str(tmp_path / "link"), "info",
         json.dumps({"redirect": "file://" + str(tmp_path / "gone")}).encode())
    message = _one_line_error(str(tmp_path / "link"), match=r"its redirect to file://.*/gone leads nowhere")
    assert "No info file was found" in message


def test_paths_that_are_not_precomputed(tmp_path):
    _one_line_error("ftp://example.com/ws", match=r"unsupported protocol ftp://")
    _one_line_error("zarr://file://" + str(tmp_path), match=r"a zarr volume, not a Neuroglancer precomputed")
    _one_line_error("gs://bucket/ws|zarr2:", match=r"a zarr2 volume")
    _one_line_error("graphene://https://example.com/segmentation/table/x", match=r"a graphene volume")


def test_gzipped_info_local(tmp_path, through_cloudvolume):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "info.gz").write_bytes(gzip.compress(json.dumps(INFO).encode()))
    assert _read_both(str(tmp_path / "ws")) == (MIP0, MIP1)
