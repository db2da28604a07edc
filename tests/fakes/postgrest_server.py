"""A real local HTTP server answering like a Supabase project's REST API (PostgREST behind its
gateway), by running the equivalent SQL on a real Postgres.

Only what budget/stores/supabase_rest.py uses, each as PostgREST 12 does it:

- ``POST /rest/v1/rpc/<fn>``: the JSON body's keys are the argument names; the call is
  ``fn(a => x.a, ...) from json_to_record(body) as x(a type, ...)``, as PostgREST builds it. A
  scalar comes back as its JSON, a set as an array of objects, void as 204; no function with
  those argument names is 404 ``PGRST202``.
- ``GET /rest/v1/<table>``: ``select`` (with ``col::type`` casts), ``col=op.value`` filters (eq,
  neq, gt, gte, lt, lte, is), ``order``, ``limit``, ``offset``; ``max_rows`` caps every read as
  PostgREST's ``db-max-rows`` does.
- ``POST /rest/v1/<table>``: an insert from ``json_populate_recordset`` with ``columns``,
  ``on_conflict`` and ``Prefer: resolution=ignore-duplicates|merge-duplicates, return=...``.
- ``PATCH`` and ``DELETE /rest/v1/<table>`` with filters; ``Prefer: count=exact`` gives the
  count in ``Content-Range``.

Each request runs in one transaction in the schema named by ``Accept-Profile`` (reads) or
``Content-Profile`` (writes), which must be one the server exposes. The gateway's ``apikey`` check
and PostgREST's bearer check both want the service role key. Numbers are written as Postgres
writes them (``json_agg``), so a NUMERIC arrives as a JSON number, as from the real server::

    with FakePostgrestServer(dsn, schemas=["pb_1234"]) as server:
        db = SupabaseDatabase(server.root_url, TEST_SERVICE_ROLE_KEY, schema="pb_1234")
        ...
        assert server.requests[0].path == "/rest/v1/rpc/pennybot_schema_version"
"""

from __future__ import annotations

import csv
import json
import re
import socket
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import psycopg
from psycopg import sql
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.telegram_server import LocalServer

# Shaped like a Supabase service_role key (a JWT: header.payload.signature); signed by no one.
TEST_SERVICE_ROLE_KEY = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJpc3MiOiJzdXBhYmFzZSIsInJlZiI6InBlbm55Ym90LXRlc3QiLCJyb2xlIjoic2VydmljZV9yb2xlIn0"
    ".UGVubnlCb3RGYWtlU2VydmljZVJvbGVLZXlGb3JUZXN0czAxMjM"
)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SELECT_ITEM = re.compile(r"^(?:(?P<alias>\w+):)?(?P<column>\w+)(?:::(?P<cast>[a-z_][a-z0-9_ ]*))?$")
_OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_IS_VALUES = {"null": "null", "true": "true", "false": "false"}
_RESERVED = {"select", "order", "limit", "offset", "columns", "on_conflict"}


@dataclass(frozen=True, slots=True)
class PostgrestCall:
    """One request as the server saw it; header names are lower-case, ``query`` keeps every
    parameter in order (a filter may repeat a column)."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body, parsed (None when empty)."""
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True, slots=True)
class Reply:
    """A canned answer for the next request: HTTP ``status`` with ``body`` as JSON."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


class _ApiError(Exception):
    def __init__(self, status: int, code: str | None, message: str, details: Any = None, hint: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "details": details, "hint": hint, "message": message}
        if code is None:  # the gateway's errors carry message and hint only
            self.body = {"message": message, "hint": hint}


def _pg_status(sqlstate: str) -> int:
    """PostgREST's mapping of a Postgres error to an HTTP status (PostgREST.Error)."""
    exact = {"23503": 409, "23505": 409, "25006": 405, "42883": 404, "42P01": 404, "42501": 403, "P0001": 400}
    if sqlstate in exact:
        return exact[sqlstate]
    prefix = {"08": 503, "53": 503, "0L": 403, "0P": 403, "28": 403, "P0": 500, "XX": 500}
    if sqlstate[:2] in prefix:
        return prefix[sqlstate[:2]]
    if sqlstate[:2] in ("09", "25", "2D", "38", "39", "3B", "40", "54", "55", "57", "58", "F0", "HV"):
        return 500
    return 400


def _prefer(headers: Mapping[str, str]) -> dict[str, str]:
    items = (part.strip() for part in headers.get("prefer", "").split(","))
    return dict(item.split("=", 1) for item in items if "=" in item)


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise _ApiError(400, "PGRST100", f'"failed to parse" {value!r}')
    return value


class FakePostgrestServer(LocalServer):
    """Supabase's REST API on 127.0.0.1, backed by the Postgres at ``dsn``.

    A request's outcome: 401 unless it carries the service role key in both ``apikey`` and
    ``Authorization: Bearer``; else the next scripted ``Reply``; else 406 for a schema not
    exposed; else what PostgREST would answer.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schemas: Iterable[str] = ("public",),
        service_role_key: str = TEST_SERVICE_ROLE_KEY,
        max_rows: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(
            [
                Route("/rest/v1/rpc/{fn}", self._rpc, methods=["POST"]),
                Route("/rest/v1/{table}", self._table, methods=["GET", "POST", "PATCH", "DELETE"]),
                Route("/{path:path}", self._not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            ],
            host=host,
            name="fake-postgrest",
        )
        self.dsn = dsn
        self.schemas = list(schemas)
        self.service_role_key = service_role_key
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._calls: list[PostgrestCall] = []
        self._script: deque[Reply] = deque()

    @property
    def requests(self) -> list[PostgrestCall]:
        """Every request so far, oldest first (refused ones too)."""
        with self._lock:
            return list(self._calls)

    def script(self, *replies: Reply) -> None:
        """Answer the next authenticated requests with these, one each."""
        with self._lock:
            self._script.extend(replies)

    def expose(self, schema: str) -> None:
        """Serve ``schema`` too (PostgREST's ``db-schemas``); the first one is the default."""
        if schema not in self.schemas:
            self.schemas.append(schema)

    def reset(self) -> None:
        """Forget recorded requests and queued replies."""
        with self._lock:
            self._calls.clear()
            self._script.clear()

    async def _serve(self, sock: socket.socket) -> None:
        # LocalServer's socket says protocol 0, so asyncio does not set TCP_NODELAY on the
        # connections it accepts, and each request on a kept-alive connection waits ~40 ms for a
        # delayed ACK. The same socket, re-read from its descriptor, says TCP.
        await super()._serve(socket.socket(fileno=sock.detach()))

    # --- the HTTP side ---------------------------------------------------------------------

    async def _record(self, request: Request) -> PostgrestCall:
        call = PostgrestCall(
            request.method,
            request.url.path,
            tuple(parse_qsl(request.url.query, keep_blank_values=True)),
            dict(request.headers),
            await request.body(),
        )
        with self._lock:
            self._calls.append(call)
        return call

    def _admit(self, call: PostgrestCall, *, writes: bool) -> str:
        """Check the key (the gateway, then PostgREST) and return the schema asked for."""
        key = call.headers.get("apikey")
        if key is None:
            hint = "No `apikey` request header or url param was found."
            raise _ApiError(401, None, "No API key found in request", hint=hint)
        if key != self.service_role_key:
            hint = "Double check your Supabase `anon` or `service_role` API key."
            raise _ApiError(401, None, "Invalid API key", hint=hint)
        if call.headers.get("authorization") != f"Bearer {self.service_role_key}":
            raise _ApiError(401, "PGRST301", "No suitable key or wrong key type")
        profile = call.headers.get("content-profile" if writes else "accept-profile") or self.schemas[0]
        if profile not in self.schemas:
            hint = f"Only the following schemas are exposed: {', '.join(self.schemas)}"
            raise _ApiError(406, "PGRST106", f"Invalid schema: {profile}", hint=hint)
        return profile

    def _scripted(self) -> Reply | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    async def _respond(self, request: Request, handler: Any, *, writes: bool) -> Response:
        call = await self._record(request)
        try:
            schema = self._admit(call, writes=writes)
            if (reply := self._scripted()) is not None:
                body = b"" if reply.body is None else json.dumps(reply.body).encode()
                return Response(body, reply.status, dict(reply.headers), media_type="application/json")
            async with await psycopg.AsyncConnection.connect(self.dsn) as conn:
                # As PostgREST: the profile's schema and the server's time zone, for this transaction.
                await conn.execute(
                    "select set_config('search_path', %s, true), set_config('timezone', 'UTC', true)", [schema]
                )
                status, body, headers = await handler(conn, schema, call)
            return Response(body, status, headers, media_type="application/json" if body else None)
        except _ApiError as exc:
            return Response(json.dumps(exc.body), exc.status, media_type="application/json")
        except psycopg.Error as exc:
            state, diag = exc.sqlstate or "XX000", exc.diag
            error = {"code": state, "details": diag.message_detail, "hint": diag.message_hint}
            error["message"] = diag.message_primary
            return Response(json.dumps(error), _pg_status(state), media_type="application/json")

    async def _rpc(self, request: Request) -> Response:
        return await self._respond(request, self._call, writes=True)

    async def _table(self, request: Request) -> Response:
        handlers = {"GET": self._read, "POST": self._insert, "PATCH": self._update, "DELETE": self._delete}
        return await self._respond(request, handlers[request.method], writes=request.method != "GET")

    async def _not_found(self, request: Request) -> Response:
        await self._record(request)
        body = json.dumps({"message": "no Route matched with those values"})
        return Response(body, 404, media_type="application/json")

    # --- the SQL side ----------------------------------------------------------------------

    async def _call(self, conn: Any, schema: str, call: PostgrestCall) -> tuple[int, bytes, dict[str, str]]:
        fn = _name(call.path.rsplit("/", 1)[-1])
        args = call.json() or {}
        if not isinstance(args, dict):
            raise _ApiError(400, "PGRST102", "Only a JSON object of named arguments is understood here")
        routine = await _find_routine(conn, schema, fn, set(args))
        if routine is None:
            names = ", ".join(sorted(args))
            message = f"Could not find the function {schema}.{fn}({names}) in the schema cache"
            raise _ApiError(404, "PGRST202", message)
        params, returns_set, returns_void = routine
        target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(fn))
        named = sql.SQL(", ").join(sql.SQL("{0} => x.{0}").format(sql.Identifier(n)) for n, _ in params)
        record = (
            sql.SQL("json_to_record(%s::json) as x({})").format(
                sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in params)
            )
            if params
            else sql.SQL("(select 1) x")
        )
        values = [json.dumps(args)] if params else []
        if returns_void:
            await conn.execute(sql.SQL("select {}({}) from {}").format(target, named, record), values)
            return 204, b"", {}
        if returns_set:
            limit = sql.Literal(self.max_rows) if self.max_rows else sql.SQL("all")
            query = sql.SQL(
                "select coalesce(json_agg(f), '[]')::text from (select f.* from {}, lateral {}({}) f limit {}) f"
            ).format(record, target, named, limit)
        else:
            query = sql.SQL("select coalesce(to_json({}({}))::text, 'null') from {}").format(target, named, record)
        cur = await conn.execute(query, values)
        (text,) = await cur.fetchone()
        return 200, text.encode(), {}

    async def _read(self, conn: Any, schema: str, call: PostgrestCall) -> tuple[int, bytes, dict[str, str]]:
        table = await _relation(conn, schema, call.path)
        params = dict(call.query)
        columns = _select_list(params.get("select", "*"))
        where, values = _where(call.query)
        order = _order(params.get("order"))
        limits = [int(params["limit"])] if "limit" in params else []
        if self.max_rows is not None:
            limits.append(self.max_rows)
        offset = int(params.get("offset", "0"))
        limit = sql.Literal(min(limits)) if limits else sql.SQL("all")
        query = sql.SQL(
            "select coalesce(json_agg(r), '[]')::text, count(*) from (select {} from {}{}{} limit {} offset {}) r"
        ).format(columns, table, where, order, limit, sql.Literal(offset))
        cur = await conn.execute(query, values)
        text, count = await cur.fetchone()
        content_range = f"{offset}-{offset + count - 1}/*" if count else "*/*"
        return 200, text.encode(), {"Content-Range": content_range}

    async def _insert(self, conn: Any, schema: str, call: PostgrestCall) -> tuple[int, bytes, dict[str, str]]:
        table = await _relation(conn, schema, call.path)
        params, prefer = dict(call.query), _prefer(call.headers)
        body = call.json()
        rows = body if isinstance(body, list) else [body]
        if "columns" in params:
            names = [_name(c.strip().strip('"')) for c in params["columns"].split(",")]
        else:
            names = [_name(c) for c in (rows[0] if rows else {})]
        cols = sql.SQL(", ").join(map(sql.Identifier, names))
        conflict: sql.Composable = sql.SQL("")
        resolution = prefer.get("resolution")
        if resolution in ("ignore-duplicates", "merge-duplicates"):
            targets = [_name(c) for c in params["on_conflict"].split(",")] if "on_conflict" in params else None
            targets = targets or await _primary_key(conn, schema, table)
            action = (
                sql.SQL("do nothing")
                if resolution == "ignore-duplicates"
                else sql.SQL("do update set {}").format(
                    sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in names)
                )
            )
            conflict = sql.SQL(" on conflict ({}) {}").format(sql.SQL(", ").join(map(sql.Identifier, targets)), action)
        query = sql.SQL(
            "with ins as (insert into {table} ({cols})"
            " select {cols} from json_populate_recordset(null::{table}, %s::json){conflict} returning *)"
            " select coalesce(json_agg(ins), '[]')::text, count(*) from ins"
        ).format(table=table, cols=cols, conflict=conflict)
        cur = await conn.execute(query, [json.dumps(rows)])
        text, count = await cur.fetchone()
        headers = {"Content-Range": f"*/{count}" if prefer.get("count") == "exact" else "*/*"}
        status = 200 if resolution == "merge-duplicates" and count == 0 else 201
        return status, text.encode() if prefer.get("return") == "representation" else b"", headers

    async def _update(self, conn: Any, schema: str, call: PostgrestCall) -> tuple[int, bytes, dict[str, str]]:
        table = await _relation(conn, schema, call.path)
        prefer, body = _prefer(call.headers), call.json()
        names = [_name(c) for c in body]
        where, values = _where(call.query)
        update = "update {table} set ({cols}) = (select {cols} from json_populate_record(null::{table}, %s::json))"
        query = sql.SQL(
            f"with upd as ({update}{{where}} returning *) select coalesce(json_agg(upd), '[]')::text, count(*) from upd"
        ).format(table=table, cols=sql.SQL(", ").join(map(sql.Identifier, names)), where=where)
        cur = await conn.execute(query, [json.dumps(body), *values])
        text, count = await cur.fetchone()
        total = str(count) if prefer.get("count") == "exact" else "*"
        headers = {"Content-Range": f"0-{count - 1}/{total}" if count else f"*/{total}"}
        if prefer.get("return") == "representation":
            return 200, text.encode(), headers
        return 204, b"", headers

    async def _delete(self, conn: Any, schema: str, call: PostgrestCall) -> tuple[int, bytes, dict[str, str]]:
        table = await _relation(conn, schema, call.path)
        prefer = _prefer(call.headers)
        where, values = _where(call.query)
        query = sql.SQL(
            "with del as (delete from {}{} returning *) select coalesce(json_agg(del), '[]')::text, count(*) from del"
        ).format(table, where)
        cur = await conn.execute(query, values)
        text, count = await cur.fetchone()
        headers = {"Content-Range": f"*/{count}" if prefer.get("count") == "exact" else "*/*"}
        if prefer.get("return") == "representation":
            return 200, text.encode(), headers
        return 204, b"", headers


async def _find_routine(
    conn: Any, schema: str, fn: str, arg_names: set[str]
) -> tuple[list[tuple[str, str]], bool, bool] | None:
    """The function ``schema.fn`` whose input arguments are exactly ``arg_names``: its (name,
    type) inputs, whether it returns a set, and whether it returns void."""
    cur = await conn.execute(
        "select p.pronargs, coalesce(p.proargnames, '{}'), coalesce(p.proargmodes::text[], '{}'),"
        " array(select format_type(t, null) from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) t),"
        " p.proretset, p.prorettype = 'void'::regtype"
        " from pg_proc p where p.pronamespace = %s::regnamespace and p.proname = %s",
        [schema, fn],
    )
    for nargs, names, modes, types, returns_set, returns_void in await cur.fetchall():
        modes = modes or ["i"] * nargs
        inputs = [(n, t) for n, m, t in zip(names, modes, types, strict=False) if m in ("i", "b", "v")]
        if {n for n, _ in inputs} == arg_names and len(inputs) == nargs:
            return inputs, returns_set, returns_void
    return None


async def _relation(conn: Any, schema: str, path: str) -> sql.Composable:
    table = _name(path.rsplit("/", 1)[-1])
    cur = await conn.execute("select to_regclass(format('%%I.%%I', %s::text, %s::text))", [schema, table])
    if (await cur.fetchone())[0] is None:
        raise _ApiError(404, "PGRST205", f"Could not find the table '{schema}.{table}' in the schema cache")
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


async def _primary_key(conn: Any, schema: str, table: sql.Composable) -> list[str]:
    joined = "pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)"
    cur = await conn.execute(
        f"select a.attname from {joined} where i.indrelid = %s::regclass and i.indisprimary",
        [table.as_string(conn)],
    )
    return [row[0] for row in await cur.fetchall()]


def _select_list(select: str) -> sql.Composable:
    if select.strip() == "*":
        return sql.SQL("*")
    items = []
    for raw in select.split(","):
        match = _SELECT_ITEM.match(raw.strip())
        if match is None:
            raise _ApiError(400, "PGRST100", f'"failed to parse select parameter" ({select})')
        column, cast, alias = match["column"], match["cast"], match["alias"]
        expr: sql.Composable = sql.Identifier(column)
        if cast is not None:
            expr = sql.SQL("{}::{}").format(expr, sql.SQL(cast))
        items.append(sql.SQL("{} as {}").format(expr, sql.Identifier(alias or column)))
    return sql.SQL(", ").join(items)


def _where(query: Sequence[tuple[str, str]]) -> tuple[sql.Composable, list[Any]]:
    clauses: list[sql.Composable] = []
    values: list[Any] = []
    for column, condition in query:
        if column in _RESERVED:
            continue
        op, _, value = condition.partition(".")
        target = sql.Identifier(_name(column))
        if op == "is" and value in _IS_VALUES:
            clauses.append(sql.SQL("{} is {}").format(target, sql.SQL(_IS_VALUES[value])))
        elif op in _OPERATORS:
            clauses.append(sql.SQL("{} {} %s").format(target, sql.SQL(_OPERATORS[op])))
            values.append(value)
        elif op == "in" and value.startswith("(") and value.endswith(")"):  # in.(a,"b,c"): PostgREST's list
            clauses.append(sql.SQL("{} = any(%s)").format(target))
            values.append([v.strip('"') for v in next(csv.reader([value[1:-1]]))] if value != "()" else [])
        else:
            raise _ApiError(400, "PGRST100", f'"failed to parse filter ({condition})"')
    if not clauses:
        return sql.SQL(""), values
    return sql.SQL(" where ") + sql.SQL(" and ").join(clauses), values


def _order(order: str | None) -> sql.Composable:
    if not order:
        return sql.SQL("")
    terms = []
    for term in order.split(","):
        column, *mods = term.split(".")
        direction = sql.SQL(" desc" if "desc" in mods else " asc")
        nulls = sql.SQL(" nulls first" if "nullsfirst" in mods else " nulls last" if "nullslast" in mods else "")
        terms.append(sql.Identifier(_name(column)) + direction + nulls)
    return sql.SQL(" order by ") + sql.SQL(", ").join(terms)
