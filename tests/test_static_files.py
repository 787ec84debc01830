"""Static files come from the app itself (WhiteNoise): the admin is styled under gunicorn
and in docker-compose, with no web server in front to serve them."""

import pytest


@pytest.mark.parametrize(
    "path, content_type",
    [
        ("/static/admin/css/base.css", "text/css"),
        ("/static/admin/js/core.js", "text/javascript"),
        ("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js", "javascript"),
    ],
)
def test_static_files_are_served_by_the_app(client, path, content_type):
    response = client.get(path)

    assert response.status_code == 200
    assert content_type in response["Content-Type"]
    assert b"".join(response.streaming_content)


def test_an_unknown_static_file_is_a_404(client, db):
    assert client.get("/static/admin/css/nope.css").status_code == 404


def test_the_admin_login_page_links_styles_that_are_served(client, db):
    page = client.get("/admin/login/").content.decode()

    assert '/static/admin/css/base.css"' in page
    assert client.get("/static/admin/css/base.css").status_code == 200
