"""The production TLS proxy's template served by a real nginx in front of the session's real stack (issue 17).

docker/nginx/templates/default.conf.template is rendered the way the nginx image's envsubst does it
(only the variables given; nginx's own lower-case $variables untouched) with Debian's nginx
(scripts/system_deps.sh), a CA and a server certificate made here, on free 127.0.0.1 ports, in
front of the stack's Airflow api-server and MLflow. Grafana's upstream is a port nothing listens
on: the proxy must start and serve the others anyway.
"""
from __future__ import annotations

import base64
import datetime as dt
import http.client
import ipaddress
import json
import shutil
import socket
import ssl
import string
import subprocess
import tempfile
import time
import urllib.parse
import warnings
from pathlib import Path

import pytest

from jobs import contract
from scripts.devstack.env import REPO
from scripts.devstack.temporary import free_ports

TEMPLATE = REPO / "docker" / "nginx" / "templates" / "default.conf.template"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HOSTS = {"airflow": "airflow.localhost", "mlflow": "mlflow.localhost", "grafana": "grafana.localhost"}


def render(values: dict[str, str]) -> str:
    """envsubst with a variable list, as the image runs it: $NAME and ${NAME} of those names only."""
    return string.Template(TEMPLATE.read_text()).safe_substitute(values)


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA (its key never written) and a server certificate for the three hosts, localhost and 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lakehouse-mlops test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(n) for n in ("localhost", *HOSTS.values())]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = folder / "ca.pem", folder / "fullchain.pem", folder / "privkey.pem"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


def _host_port(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def _wait_listening(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"nginx exited with {proc.returncode}: {log.read_text() if log.exists() else ''}"
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)  # the poll interval, not a synchronisation
    raise AssertionError(f"nginx did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


@pytest.fixture(scope="module")
def proxy(stack):
    """nginx in the foreground with a private prefix; stopped (and waited for) whatever happens."""
    if not Path(NGINX).exists():
        pytest.fail("nginx is missing: bash scripts/system_deps.sh installs it")
    root = Path(tempfile.mkdtemp(prefix="lakehouse-tls-"))
    root.chmod(0o755)  # nginx's workers (nobody) create their temp files under the prefix
    ca, cert, key = _certificates(root)
    https_port, http_port, grafana_port = free_ports(3)
    values = {"TLS_CERT_PATH": str(cert), "TLS_KEY_PATH": str(key),
              "NGINX_HTTP_PORT": f"127.0.0.1:{http_port}", "NGINX_HTTPS_PORT": f"127.0.0.1:{https_port}",
              "PUBLIC_HTTPS_PORT": str(https_port), "NGINX_RESOLVER": "127.0.0.1",
              "AIRFLOW_SERVER_NAME": HOSTS["airflow"], "MLFLOW_SERVER_NAME": HOSTS["mlflow"],
              "GRAFANA_SERVER_NAME": HOSTS["grafana"],
              "AIRFLOW_UPSTREAM": _host_port(stack.env["AIRFLOW_API_URL"]),
              "MLFLOW_UPSTREAM": _host_port(stack.env["MLFLOW_TRACKING_URI"]),
              "GRAFANA_UPSTREAM": f"127.0.0.1:{grafana_port}"}
    site = render(values)
    assert "${" not in site
    (root / "default.conf").write_text(site)
    log = root / "error.log"
    # What the image's /etc/nginx/nginx.conf does around conf.d/: here with paths under the prefix.
    (root / "nginx.conf").write_text(f"""
daemon off;
pid {root}/nginx.pid;
error_log {log} info;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    include {root}/default.conf;
}}
""")
    argv = [NGINX, "-p", str(root), "-c", str(root / "nginx.conf")]
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(https_port, proc, log)
        _wait_listening(http_port, proc, log)
        yield {"ca": ca, "https": https_port, "http": http_port, "root": root, "stack": stack}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def _context(ca: Path | None, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    if version is not None:
        with warnings.catch_warnings():  # TLS 1.1 is deprecated in Python's ssl too: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = version
        if version < ssl.TLSVersion.TLSv1_2:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer it at all: the server must refuse
    return ctx


def _https(port: int, host: str, path: str, ctx: ssl.SSLContext, headers: dict | None = None
           ) -> tuple[int, dict[str, str], bytes]:
    """GET over TLS to 127.0.0.1 with SNI, Host and the certificate check all for ``host``."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname=host)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _http(port: int, host: str, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_airflow_ui_and_api_over_verified_https_with_hsts(proxy):
    ctx = _context(proxy["ca"])
    status, headers, body = _https(proxy["https"], HOSTS["airflow"], "/api/v2/monitor/health", ctx)
    assert status == 200 and json.loads(body)["metadatabase"]["status"] == "healthy", (status, body[:300])
    assert headers["strict-transport-security"].startswith("max-age=31536000"), headers
    status, headers, body = _https(proxy["https"], HOSTS["airflow"], "/", ctx)
    assert status == 200 and b"<html" in body.lower(), (status, body[:300])


def test_mlflow_over_verified_https_with_its_login(proxy):
    ctx = _context(proxy["ca"])
    status, headers, body = _https(proxy["https"], HOSTS["mlflow"], "/health", ctx)
    assert status == 200 and body.strip() == b"OK", (status, body[:300])
    assert "strict-transport-security" in headers
    env = proxy["stack"].env
    user_password = f"{env[contract.MLFLOW_CLIENT_USER_VAR]}:{env[contract.MLFLOW_CLIENT_PASSWORD_VAR]}"
    login = {"Authorization": "Basic " + base64.b64encode(user_password.encode()).decode()}
    query = urllib.parse.urlencode({"experiment_name": env["MLFLOW_EXPERIMENT_NAME"]})
    path = f"/api/2.0/mlflow/experiments/get-by-name?{query}"
    status, _, body = _https(proxy["https"], HOSTS["mlflow"], path, ctx, login)
    assert status == 200 and json.loads(body)["experiment"]["name"] == env["MLFLOW_EXPERIMENT_NAME"], body[:300]
    assert _https(proxy["https"], HOSTS["mlflow"], path, ctx)[0] == 401  # the proxy adds no login


@pytest.mark.parametrize("ui", ["airflow", "mlflow"])
def test_plain_http_is_redirected_permanently_to_https(proxy, ui):
    status, headers, body = _http(proxy["http"], HOSTS[ui], "/some/path?x=1")
    assert status == 301, (status, body[:200])
    assert headers["location"] == f"https://{HOSTS[ui]}:{proxy['https']}/some/path?x=1"
    assert b"healthy" not in body


def test_plain_http_to_the_https_port_gets_no_ui(proxy):
    status, _, body = _http(proxy["https"], HOSTS["airflow"], "/api/v2/monitor/health")
    assert status == 400 and b"metadatabase" not in body, (status, body[:200])


def test_tls_1_1_is_refused_and_1_2_and_1_3_are_served(proxy):
    old = _context(proxy["ca"], ssl.TLSVersion.TLSv1_1)
    with pytest.raises(ssl.SSLError):
        _https(proxy["https"], HOSTS["airflow"], "/api/v2/monitor/health", old)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        assert _https(proxy["https"], HOSTS["airflow"], "/api/v2/monitor/health",
                      _context(proxy["ca"], version))[0] == 200, version


def test_without_the_ca_the_certificate_does_not_verify(proxy):
    with pytest.raises(ssl.SSLCertVerificationError):
        _https(proxy["https"], HOSTS["airflow"], "/api/v2/monitor/health", _context(None))


def test_an_unknown_host_name_and_a_missing_grafana_get_no_ui(proxy):
    ctx = _context(proxy["ca"])
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        _https(proxy["https"], "localhost", "/api/v2/monitor/health", ctx)  # the catch-all server's 444
    status, _, _ = _https(proxy["https"], HOSTS["grafana"], "/api/health", ctx)
    assert status == 502  # nginx runs although Grafana is not there; Airflow and MLflow answered above
