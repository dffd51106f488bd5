"""The production TLS proxy (issue 17, item 6) as Compose would start it, checked statically.

tests/security/test_tls.py serves the same template with a real nginx; here: the image renders
every variable the template uses, the certificate comes from .env read-only, nothing else is served.
"""
from __future__ import annotations

import re

import pytest
import yaml
from test_compose import COMPOSE_FILE, ENV_EXAMPLE, REPO, interpolate_tree, service_env

from scripts.devstack import dotenv

TEMPLATE = REPO / "docker" / "nginx" / "templates" / "default.conf.template"
PROXY = "tls-proxy"


def template_variables() -> set[str]:
    """What envsubst replaces: the upper-case ${NAME}s (nginx's own variables are lower-case)."""
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", TEMPLATE.read_text()))


@pytest.fixture(scope="module")
def proxy() -> dict:
    env = dotenv.read_env_file(ENV_EXAMPLE)
    return interpolate_tree(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")), env)["services"][PROXY]


def test_the_image_gets_every_variable_of_the_template(proxy):
    assert template_variables() <= set(proxy["environment"]), template_variables() - set(proxy["environment"])
    assert not re.search(r"\$[a-z_]+\b", " ".join(proxy["environment"].values()))


def test_the_template_is_mounted_where_the_image_renders_it_and_replaces_its_default_site(proxy):
    assert "./docker/nginx/templates/default.conf.template:/etc/nginx/templates/default.conf.template:ro" \
        in proxy["volumes"]
    assert re.fullmatch(r"nginx:\d+\.\d+(\.\d+)?-alpine", proxy["image"])


def test_the_certificate_and_key_come_from_env_paths_read_only(proxy):
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"][PROXY]
    env = service_env({"services": {PROXY: proxy}}, PROXY)
    for var, target in (("TLS_CERT_FILE", env["TLS_CERT_PATH"]), ("TLS_KEY_FILE", env["TLS_KEY_PATH"])):
        assert any(v.startswith(f"${{{var}:?") and v.endswith(f":{target}:ro") for v in raw["volumes"]), var
    example = dotenv.read_env_file(ENV_EXAMPLE)
    assert f"{example['TLS_CERT_FILE']}:{env['TLS_CERT_PATH']}:ro" in proxy["volumes"]


def test_only_https_and_the_redirect_are_published_on_the_bind_address(proxy):
    assert sorted(proxy["ports"]) == ["127.0.0.1:443:443", "127.0.0.1:80:80"]
    env = service_env({"services": {PROXY: proxy}}, PROXY)
    assert (env["NGINX_HTTPS_PORT"], env["NGINX_HTTP_PORT"]) == ("443", "80")


def test_the_template_allows_tls12_and_13_only_and_sends_hsts():
    text = TEMPLATE.read_text()
    assert re.findall(r"^\s*ssl_protocols ([^;]+);", text, re.M) == ["TLSv1.2 TLSv1.3"]
    servers = text.count("listen ${NGINX_HTTPS_PORT} ssl")
    assert text.count("Strict-Transport-Security") == servers - 1  # every UI; the catch-all answers nothing
    assert re.search(r"listen \$\{NGINX_HTTP_PORT\} default_server;\s+server_name _;\s+return 301 https://",
                     text)
