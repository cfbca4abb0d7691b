"""`make mutations`: proves that the tests catch what they claim to, by breaking the code.

For each mutation below: copy the repository to a temporary folder, apply the one change, build
the image from the copy when the change is in the image, run the tests that should catch it
(from the copy, against that image), and count it caught when they fail. Prints a table of
caught/missed; exits 1 when one is missed. Not part of `make test` (about 15 minutes); run it
after changing a test or the code a test guards:

    make mutations                       # all
    make mutations MUTATIONS="3 7"       # by number
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTEST = ROOT / "tests" / ".venv" / "bin" / "pytest"
# What the Dockerfile copies (.dockerignore): a change here needs a rebuilt image.
IN_IMAGE = (
    "Dockerfile",
    "main.py",
    "tornado.conf",
    "supervisord.conf",
    "tornado_bundle/",
    "container/",
)
IGNORED = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", "results")


@dataclass(frozen=True)
class Mutation:
    what: str
    path: str
    before: str
    after: str
    tests: tuple[str, ...]


MUTATIONS = [
    Mutation(
        "diagnostics routes always on",
        "tornado_bundle/runner.py",
        "    if bundle.diagnostics:\n        diagnostics.add_routes(app)",
        "    diagnostics.add_routes(app)",
        (
            "tests/unit/test_runner.py::AppTest",
            "tests/image/test_bundle.py::test_internal_addresses_stay_hidden_and_diagnostics_are_off_by_default",
        ),
    ),
    Mutation(
        "X-Real-IP passed from the client",
        "container/nginx/proxy.conf.template",
        "proxy_set_header X-Real-IP $remote_addr;\n",
        "",
        ("tests/image/test_bundle.py::test_a_client_cannot_choose_its_own_address_or_scheme",),
    ),
    Mutation(
        "X-Scheme passed from the client",
        "container/nginx/proxy.conf.template",
        'proxy_set_header X-Scheme "";\n',
        "",
        ("tests/image/test_bundle.py::test_a_client_cannot_choose_its_own_address_or_scheme",),
    ),
    Mutation(
        "drain does not wait for nginx's idle connections",
        "tornado_bundle/drain.py",
        "    while server.open_connections() and loop.time() < deadline:",
        "    while False:",
        ("tests/unit/test_runner.py::test_drain_waits_for_an_idle_kept_alive_connection_to_close",),
    ),
    Mutation(
        "drain returns at once",
        "tornado_bundle/drain.py",
        "    server.stop()\n    closed = close_websockets()",
        "    server.stop()\n    return\n    closed = close_websockets()",
        (
            "tests/unit/test_runner.py::test_drain_lets_the_in_flight_request_finish_and_refuses_new_ones",
            "tests/image/test_resilience.py::test_a_restarted_instance_finishes_its_in_flight_request",
        ),
    ),
    Mutation(
        "drain closes every connection at once",
        "tornado_bundle/drain.py",
        "    server.stop()\n    closed = close_websockets()",
        "    server.stop()\n    await server.close_all_connections()\n"
        "    closed = close_websockets()",
        (
            "tests/unit/test_runner.py::test_drain_lets_the_in_flight_request_finish_and_refuses_new_ones",
            "tests/image/test_resilience.py::test_a_restarted_instance_finishes_its_in_flight_request",
        ),
    ),
    Mutation(
        "write_atomically writes in place",
        "tornado_bundle/files.py",
        '    partial = path.with_suffix(".partial")\n    partial.write_text(text)\n'
        "    partial.replace(path)",
        "    path.write_text(text)",
        ("tests/unit/test_settings.py::test_output_is_written_atomically",),
    ),
    Mutation(
        "no max_fails=0",
        "tornado.conf",
        "weight=@INSTANCE_WEIGHT@ max_fails=0;",
        "weight=@INSTANCE_WEIGHT@;",
        (
            "tests/image/test_resilience.py::"
            "test_kill_9_of_one_instance_fails_no_request_and_it_is_back_within_3_seconds",
        ),
    ),
    Mutation(
        "WebSocket map sends Connection: close to plain requests",
        "tornado.conf",
        "    default '';\n    \"~*^websocket$\" upgrade;",
        '    default close;\n    "~*^websocket$" upgrade;',
        (
            "tests/image/test_long_lived.py::"
            "test_plain_requests_keep_reusing_upstream_connections_after_websockets",
        ),
    ),
    Mutation(
        "no Upgrade header to the instances",
        "container/nginx/proxy.conf.template",
        "proxy_set_header Upgrade $websocket_upgrade;\n",
        "",
        ("tests/image/test_long_lived.py::test_permessage_deflate_is_negotiated_end_to_end",),
    ),
    Mutation(
        "Host without its port (check_origin refuses the page's own origin)",
        "container/nginx/proxy.conf.template",
        "proxy_set_header Host $forward_host;\nproxy_set_header X-Real-IP",
        "proxy_set_header Host $host;\nproxy_set_header X-Real-IP",
        (
            "tests/image/test_long_lived.py::"
            "test_a_foreign_origin_is_refused_and_the_same_origin_accepted",
        ),
    ),
    Mutation(
        "timeouts retried on the next instance",
        "container/nginx/proxy.conf.template",
        "proxy_next_upstream error;\n# At most one other",
        "proxy_next_upstream error timeout;\n# At most one other",
        ("tests/image/test_long_lived.py::test_a_timeout_is_a_504_and_the_request_ran_once",),
    ),
    Mutation(
        "drain leaves WebSockets open",
        "tornado_bundle/drain.py",
        "    closed = close_websockets()",
        "    closed = 0",
        (
            "tests/unit/test_runner.py::test_drain_closes_websockets_with_1001_at_once",
            "tests/image/test_long_lived.py::"
            "test_rolling_restart_sends_1001_to_50_websockets_and_they_reconnect",
        ),
    ),
    Mutation(
        "no pings for idle WebSockets",
        "tornado_bundle/runner.py",
        '    app.settings.setdefault("websocket_ping_interval", bundle.websocket_ping_interval)',
        "",
        (
            "tests/image/test_long_lived.py::test_an_idle_websocket_outlives_three_proxy_read_timeouts",
        ),
    ),
    Mutation(
        "dotfiles served",
        "container/nginx/static-files.conf.template",
        "    location ~ /\\. {\n        return 404;\n    }\n",
        "",
        ("tests/image/test_apps.py::test_traversal_and_dotfiles_never_leak",),
    ),
    Mutation(
        "no precompressed files",
        "container/nginx/static-files.conf.template",
        "    gzip_static on;",
        "    gzip_static off;",
        ("tests/image/test_apps.py::test_precompressed_copy_only_for_clients_that_accept_gzip",),
    ),
    Mutation(
        "versioned static links not cached for a year",
        "tornado.conf",
        '    default "public, max-age=31536000, immutable";',
        '    default "public, max-age=60, must-revalidate";',
        ("tests/image/test_apps.py::test_only_versioned_links_are_cached_for_a_year",),
    ),
    Mutation(
        "static files proxied to Tornado",
        "container/nginx/static-files.conf.template",
        "    alias @STATIC_PATH@;",
        "    proxy_pass http://tornadoes;",
        ("tests/image/test_apps.py::test_static_files_are_served_while_every_instance_is_stopped",),
    ),
    Mutation(
        "the watchdog never kills",
        "tornado_bundle/watchdog.py",
        "            os.kill(instance.pid, signal.SIGKILL)",
        "            pass",
        (
            "tests/unit/test_watchdog_unit.py",
            "tests/image/test_watchdog.py::test_a_hung_instance_is_killed_and_replaced_with_no_failed_get",
        ),
    ),
    Mutation(
        "the health check ignores the watchdog's report",
        "container/bin/healthcheck",
        'if [ $# -eq 0 ]; then\n    if [ ! -f "$report" ]',
        'if false; then\n    if [ ! -f "$report" ]',
        (
            "tests/image/test_watchdog.py::test_unhealthy_while_an_instance_is_hung_and_healthy_again_after",
        ),
    ),
    Mutation(
        "no blocked-loop warning",
        "tornado_bundle/loop_monitor.py",
        "            if blocked > self.threshold and beat != warned_for:",
        "            if False:",
        (
            "tests/image/test_watchdog.py::"
            "test_a_blocking_handler_is_named_by_file_and_line_then_killed_with_its_stack",
        ),
    ),
    Mutation(
        "Tornado's default listen backlog",
        "tornado_bundle/runner.py",
        "backlog=capacity().listen_backlog)",
        "backlog=128)",
        ("tests/image/test_watchdog.py::test_3000_active_keep_alive_clients_get_only_200s",),
    ),
    Mutation(
        "the build host's CA certificates kept",
        "Dockerfile",
        "    rm -f /usr/local/share/ca-certificates/*.crt; \\\n",
        "",
        ("tests/image/test_trust.py::test_the_runtime_trusts_debian_s_ca_set_and_nothing_else",),
    ),
    Mutation(
        "setuid bits kept",
        "Dockerfile",
        "    find / -xdev -perm /6000 -type f -exec chmod a-s {} +",
        "    true",
        ("tests/image/test_trust.py::test_no_setuid_or_setgid_file",),
    ),
    Mutation(
        "a crash loop longer than startsecs never stops the container",
        "tornado_bundle/fail_fast.py",
        "        if self.quick_exits[name] >= QUICK_EXITS:",
        "        if False:",
        ("tests/unit/test_fail_fast.py",),
    ),
    Mutation(
        "no 503 past capacity",
        "tornado.conf",
        "    limit_conn active_requests @MAX_ACTIVE_REQUESTS@;\n",
        "",
        (
            "tests/image/test_watchdog.py::"
            "test_beyond_capacity_a_fast_503_and_service_returns_when_the_crowd_leaves",
        ),
    ),
    Mutation(
        "TLS: no server cipher order",
        "container/nginx/tls.conf.template",
        "ssl_prefer_server_ciphers on;",
        "ssl_prefer_server_ciphers off;",
        ("tests/image/test_production.py::test_testssl_finds_nothing_medium_or_above",),
    ),
    Mutation(
        "TLS: no HTTP/2",
        "container/nginx/tls.conf.template",
        "http2 on;",
        "http2 off;",
        ("tests/image/test_production.py::test_https_negotiates_http2_and_tornado_sees_https",),
    ),
    Mutation(
        "an expired certificate is accepted",
        "tornado_bundle/certificates.py",
        "    if expires <= (now or datetime.datetime.now(datetime.UTC)):",
        "    if False:",
        ("tests/image/test_production.py::test_bad_certificate_or_key_exits_1_with_one_line",),
    ),
    Mutation(
        "TLS_REDIRECT also redirects the health check",
        "tornado.conf",
        "    http@HEALTH_PATH@ 0;\n",
        "",
        (
            "tests/image/test_production.py::test_tls_redirect_sends_308_except_for_the_health_check",
        ),
    ),
    Mutation(
        "Tornado's log lines lose the request ID",
        "tornado_bundle/drain.py",
        '        REQUEST_ID.set(request.headers.get("X-Request-ID", ""))\n',
        "",
        (
            "tests/image/test_production.py::test_request_id_joins_the_response_the_access_line_and_the_traceback",
        ),
    ),
    Mutation(
        "any client may choose its request ID",
        "tornado.conf",
        "geo $realip_remote_addr $from_trusted_proxy {\n    default 0;",
        "geo $realip_remote_addr $from_trusted_proxy {\n    default 1;",
        (
            "tests/image/test_production.py::test_request_id_joins_the_response_the_access_line_and_the_traceback",
        ),
    ),
    Mutation(
        "LOG_FORMAT=json passes non-JSON lines through",
        "tornado_bundle/logs.py",
        "    if _own_record(source, stripped):",
        "    if True:",
        ("tests/image/test_production.py::test_json_logs_every_line_is_an_object_with_the_fields",),
    ),
    Mutation(
        "ACCESS_LOG=off is ignored",
        "tornado_bundle/nginx.py",
        '        "ACCESS_LOG": settings.access_log,',
        '        "ACCESS_LOG": True,',
        ("tests/image/test_production.py::test_access_log_off_keeps_the_warnings",),
    ),
    Mutation(
        "nginx's output is not kept for supervisorctl tail",
        "supervisord.conf",
        "stdout_logfile=/tmp/log/%(program_name)s.log\nstdout_logfile_maxbytes=1MB",
        "stdout_logfile=/dev/stdout\nstdout_logfile_maxbytes=0",
        (
            "tests/image/test_production.py::test_supervisorctl_tail_and_maintail_read_each_program_s_capped_log",
        ),
    ),
    Mutation(
        "a restarted instance takes the counters of all with it",
        "tornado_bundle/request_metrics.py",
        '    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)\n',
        '    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)\n'
        '    [path.unlink() for path in METRICS_DIR.glob("*.db")]\n',
        (
            "tests/image/test_production.py::test_prometheus_counts_exactly_n_requests_across_instances_and_restarts",
        ),
    ),
    Mutation(
        "the swarm lab's front does not retry on another node",
        "swarm-lab/front.conf",
        "proxy_next_upstream error timeout http_502 http_503 http_504;",
        "proxy_next_upstream off;",
        ("tests/lab/test_swarm_lab.py",),
    ),
    Mutation(
        "the request metrics keep a series per raw method name",
        "tornado_bundle/request_metrics.py",
        "        key = (method, type(handler), handler.get_status())",
        "        key = (request.method, type(handler), handler.get_status())",
        (
            "tests/image/test_hostile_input.py::test_ten_thousand_invented_methods_leave_memory_flat",
        ),
    ),
    Mutation(
        "nginx passes any method to the app",
        "tornado.conf",
        '    if ($request_method !~ "^(@KNOWN_METHODS@)$") {\n        return 501;\n    }\n',
        "",
        (
            "tests/image/test_hostile_input.py::test_ten_thousand_invented_methods_leave_memory_flat",
        ),
    ),
    Mutation(
        "the metrics endpoint waits for a request for ever",
        "tornado_bundle/metrics.py",
        'asyncio.wait_for(reader.readuntil(b"\\r\\n\\r\\n"), READ_TIMEOUT)',
        'reader.readuntil(b"\\r\\n\\r\\n")',
        (
            "tests/unit/test_production_unit.py::"
            "test_the_metrics_endpoint_serves_from_one_thread_and_drops_idle_clients",
        ),
    ),
    Mutation(
        "the metrics endpoint never makes room past MAX_CONNECTIONS",
        "tornado_bundle/metrics.py",
        "        if self.open > MAX_CONNECTIONS:",
        "        if False:",
        (
            "tests/unit/test_production_unit.py::"
            "test_the_metrics_endpoint_serves_from_one_thread_and_drops_idle_clients",
        ),
    ),
    Mutation(
        "REAL_IP_FROM trusts everyone with /0",
        "tornado_bundle/settings.py",
        "    if any(network.prefixlen == 0 for network in networks):",
        "    if False:",
        (
            "tests/unit/test_settings.py::test_bad_values_name_the_variable_the_value_and_what_is_allowed",
        ),
    ),
    Mutation(
        "the JSON relay passes an app's own JSON as a record",
        "tornado_bundle/logs.py",
        '    return isinstance(record, dict) and record.get("source") == source',
        "    return True",
        (
            "tests/unit/test_production_unit.py::"
            "test_an_app_s_own_json_is_wrapped_and_cannot_claim_another_source",
        ),
    ),
    Mutation(
        "TLS_REDIRECT before the Host check",
        "tornado.conf",
        "@?TLS@    include @RUN_DIR@/tls.conf;\n",
        "@?TLS@    include @RUN_DIR@/tls.conf;\n"
        "@?TLS_REDIRECT@    if ($to_https) { return 308 https://$host$request_uri; }\n",
        (
            "tests/image/test_production.py::test_tls_redirect_sends_308_except_for_the_health_check",
        ),
    ),
    Mutation(
        "docker stop cuts WebSockets without 1001",
        "tornado_bundle/fail_fast.py",
        "        events.subscribe(events.SupervisorStoppingEvent, self.on_stopping)\n",
        "",
        ("tests/image/test_long_lived.py::test_docker_stop_sends_1001_to_every_websocket",),
    ),
    Mutation(
        "supervisord's loop writes the output itself, waiting for its reader",
        "tornado_bundle/fail_fast.py",
        "    FailFastSupervisor.relay = logs.Relay(json_lines)",
        "    FailFastSupervisor.relay = logs.Relay(json_lines, background=False)",
        ("tests/image/test_output.py",),
    ),
    Mutation(
        "no limit per client address",
        "tornado.conf",
        "@?PER_CLIENT@    limit_conn per_client @MAX_REQUESTS_PER_CLIENT@;\n",
        "",
        (
            "tests/image/test_hostile_input.py::"
            "test_300_trickling_bodies_from_one_address_deny_no_other_address_nor_the_health_check",
        ),
    ),
    Mutation(
        "the health check inside the per-client limit",
        "tornado.conf",
        "        limit_conn health_checks 64;\n",
        "",
        (
            "tests/image/test_hostile_input.py::"
            "test_300_trickling_bodies_from_one_address_deny_no_other_address_nor_the_health_check",
        ),
    ),
    Mutation(
        "an async APP factory is not awaited",
        "tornado_bundle/app_loader.py",
        "    if inspect.isawaitable(made):",
        "    if False:",
        (
            "tests/unit/test_app_loader.py",
            "tests/image/test_real_apps.py::test_an_async_factory_serves_and_an_error_in_setup_is_one_line_and_exit_1",
        ),
    ),
    Mutation(
        "an async context manager APP is never left",
        "tornado_bundle/app_loader.py",
        '        await _await(spec, f"leaving {called}", manager.__aexit__(None, None, None))',
        "        pass",
        (
            "tests/unit/test_app_loader.py",
            "tests/image/test_real_apps.py::test_an_async_context_manager_app_is_entered_before_listening_and_left_after_the_drain",
        ),
    ),
    Mutation(
        "a starting instance is judged by WATCHDOG_TIMEOUT",
        "tornado_bundle/watchdog.py",
        "        if not instance.started:",
        "        if False:",
        (
            "tests/unit/test_watchdog_unit.py",
            "tests/image/test_real_apps.py::test_an_app_that_takes_30_s_to_import_starts_and_serves",
        ),
    ),
    Mutation(
        "failed starts never stop the container",
        "tornado_bundle/fail_fast.py",
        "        if self.failed_starts[name] >= FAILED_STARTS:",
        "        if False:",
        (
            "tests/unit/test_fail_fast.py",
            "tests/image/test_real_apps.py::test_an_app_that_can_never_start_stops_the_container_with_exit_1",
        ),
    ),
    Mutation(
        "nginx buffers request bodies",
        "container/nginx/proxy.conf.template",
        "proxy_request_buffering off;\n",
        "",
        (
            "tests/image/test_real_apps.py::test_tornado_s_file_upload_demo_streams_1_gb_on_a_read_only_root_with_16_mb_of_tmp",
        ),
    ),
    Mutation(
        "Tornado keeps its own 100 MB body limit",
        "tornado_bundle/runner.py",
        "xheaders=True, max_body_size=limit)",
        "xheaders=True)",
        (
            "tests/image/test_real_apps.py::test_tornado_takes_any_body_nginx_lets_through_and_nginx_refuses_the_rest",
        ),
    ),
    Mutation(
        "X-Forwarded-Proto is always the connection's scheme",
        "container/nginx/proxy.conf.template",
        "proxy_set_header X-Forwarded-Proto $forward_proto;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        (
            "tests/image/test_real_apps.py::test_x_forwarded_proto_is_taken_from_a_trusted_proxy_only",
        ),
    ),
    Mutation(
        "X-Forwarded-Proto believed from anyone",
        "tornado.conf",
        '    "~^1:(?<proto>https?)$" $proto;',
        '    "~^[01]:(?<proto>https?)$" $proto;',
        (
            "tests/image/test_real_apps.py::test_x_forwarded_proto_is_taken_from_a_trusted_proxy_only",
        ),
    ),
    Mutation(
        "response headers limited to nginx's 4 KB",
        "container/nginx/proxy.conf.template",
        "proxy_buffer_size 32k;\n",
        "",
        (
            "tests/image/test_real_apps.py::test_response_headers_of_16_kb_pass_and_larger_ones_are_logged_with_the_instance",
        ),
    ),
    Mutation(
        "sticky does not hash the cookie",
        "tornado.conf",
        "@?STICKY@    hash $sticky_key consistent;\n",
        "",
        (
            "tests/image/test_real_apps.py::test_sticky_keeps_each_client_on_one_instance_and_falls_over_while_it_restarts",
        ),
    ),
    Mutation(
        "a catch-all route takes /healthz",
        "tornado_bundle/runner.py",
        "    return own is not None and own is not _handler_of(",
        "    return own is not None and own is _handler_of(",
        (
            "tests/unit/test_runner.py",
            "tests/image/test_real_apps.py::test_tornado_s_file_upload_demo_streams_1_gb_on_a_read_only_root_with_16_mb_of_tmp",
        ),
    ),
    Mutation(
        "server-level drop-ins not included",
        "tornado.conf",
        "    include @SERVER_D@/*.conf;\n",
        "",
        (
            "tests/image/test_configuration.py::test_nginx_drop_ins_at_http_and_server_level_are_used_and_checked_at_start",
        ),
    ),
    Mutation(
        "http-level drop-ins not included",
        "container/nginx/nginx.conf",
        "    include /etc/nginx/conf.d/*.conf;\n",
        "",
        (
            "tests/image/test_configuration.py::test_nginx_drop_ins_at_http_and_server_level_are_used_and_checked_at_start",
        ),
    ),
    Mutation(
        "nginx never listens on IPv6",
        "tornado_bundle/nginx.py",
        '"IPV6": listens_on_ipv6(settings, limits),',
        '"IPV6": False,',
        (
            "tests/unit/test_settings.py::test_listen_ipv6_adds_the_ipv6_listen_lines",
            "tests/image/test_configuration.py::test_nginx_listens_on_ipv6_too_when_the_container_has_it",
        ),
    ),
    Mutation(
        "a NAME_FILE secret never reaches the app",
        "container/entrypoint.d/30-secrets-from-files.envsh",
        '    export "$secrets_variable=$secrets_value"\n',
        "",
        (
            "tests/image/test_real_apps.py::test_a_name_file_variable_gives_the_app_the_file_s_content_and_shows_it_nowhere",
        ),
    ),
    Mutation(
        "a failed prestart does not stop the container",
        "container/entrypoint.d/40-prestart.sh",
        'nothing was started"\n    exit 1\n',
        'nothing was started"\n',
        (
            "tests/image/test_real_apps.py::test_the_prestart_script_migrates_the_database_before_any_instance_starts",
        ),
    ),
    Mutation(
        "the chat page reconnects its WebSocket only after a 1001",
        "examples/chat/static/chat.js",
        "        if (!stopped) setTimeout(connect, event.code === 1001 ? 100 : 1000);",
        "        if (!stopped && event.code === 1001) setTimeout(connect, 100);",
        (
            "tests/image/test_long_lived.py::test_the_chat_page_in_a_browser_gets_messages_by_every_transport_through_a_rolling_restart",
        ),
    ),
]


def in_image(path: str) -> bool:
    return any(path == item or path.startswith(item) for item in IN_IMAGE if item)


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> int:
    try:
        return subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, timeout=timeout, check=False
        ).returncode
    except subprocess.TimeoutExpired:
        return -1


def control(chosen: list[int]) -> Mutation:
    """No change at all, and every test that the chosen mutations name: all must pass, or a
    "caught" below could be a test that fails anyway."""
    tests = sorted({test for number in chosen for test in MUTATIONS[number - 1].tests})
    return Mutation("control: no change, the same tests pass", "main.py", "", "", tuple(tests))


def try_mutation(number: int, mutation: Mutation, image: str) -> tuple[str, float]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tornado-bundle-mutant-") as folder:
        copy = Path(folder) / "repo"
        shutil.copytree(ROOT, copy, ignore=IGNORED)
        target = copy / mutation.path
        text = target.read_text()
        if number and text.count(mutation.before) != 1:
            return "does not apply", time.monotonic() - started
        if number:
            target.write_text(text.replace(mutation.before, mutation.after))
        env = {**os.environ, "IMAGE": image}
        mutant = ""
        if number and in_image(mutation.path):
            mutant = f"tornado-bundle-mutant:{number}-{uuid.uuid4().hex[:6]}"
            build = ["docker", "build", "--quiet", "-t", mutant]
            if run([*build, str(copy)], copy, env, 600) != 0:
                return "build failed", time.monotonic() - started
            env["IMAGE"] = mutant
        try:
            pytest = [str(PYTEST), "-x", "-q", "-p", "no:cacheprovider", *mutation.tests]
            code = run(pytest, copy, env, 900)
        finally:
            if mutant:
                subprocess.run(["docker", "image", "rm", "-f", mutant], capture_output=True)
    if not number:
        return ("passes" if code == 0 else f"CONTROL FAILED ({code})"), time.monotonic() - started
    verdict = {0: "MISSED", 1: "caught", -1: "caught (timed out)"}.get(code, f"error {code}")
    return verdict, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("numbers", nargs="*", type=int, help="which mutations (default: all)")
    parser.add_argument("--image", default=os.environ.get("IMAGE", "tornado-bundle:latest"))
    arguments = parser.parse_args()
    chosen = arguments.numbers or list(range(1, len(MUTATIONS) + 1))
    rows = []
    for number in [0, *chosen]:
        mutation = MUTATIONS[number - 1] if number else control(chosen)
        verdict, seconds = try_mutation(number, mutation, arguments.image)
        rows.append((number, mutation, verdict))
        print(f"{number:>2}. {verdict:<8} {seconds:5.0f}s  {mutation.what}", flush=True)
    print("\n| # | mutation | file | caught by | result |\n|---|---|---|---|---|")
    for number, mutation, verdict in rows[1:]:
        tests = ", ".join(f"`{t.split('::')[-1]}`" for t in mutation.tests)
        print(f"| {number} | {mutation.what} | `{mutation.path}` | {tests} | {verdict} |")
    print(f"\ncontrol (no change, the same tests): {rows[0][2]}")
    passed = rows[0][2] == "passes"
    return 0 if passed and all(verdict.startswith("caught") for _, _, verdict in rows[1:]) else 1


if __name__ == "__main__":
    sys.exit(main())
