"""A hot statement prepared once per database session, then only EXECUTEd.

PostgreSQL plans every statement it is sent. For the few big statements on the hot paths
(the snapshot read, an outbox item's begin, a retry's record) planning costs more than
running them: about 1.2 ms against 0.4 ms for the begin. Prepared, a session plans each
once. Plain PREPARE and EXECUTE rather than psycopg's own preparing, which Django turns
off for every statement (`prepare_threshold` None, for transaction-pooling bouncers):
these statements opt in one by one.

Behind a transaction-pooling bouncer a transaction may run on another server session, one
without the statement: Django's flag for such a deployment, DISABLE_SERVER_SIDE_CURSORS,
turns preparing off and the statement is sent whole.
"""

import re
import weakref

from django.db import connection


class PreparedStatement:
    """`sql` with named placeholders (`%(name)s`) and `types` a dict giving each
    parameter's SQL type in the order EXECUTE passes them; or with positional ones (`%s`)
    and `types` a list, one type for each in order."""

    def __init__(self, name: str, sql: str, types: dict[str, str] | list[str]) -> None:
        if isinstance(types, dict):
            names = set(re.findall(r"%\((\w+)\)s", sql))
            if names != set(types):
                raise ValueError(f"{name}: parameters {sorted(names)}, types {sorted(types)}")
            number = {param: index for index, param in enumerate(types, start=1)}
            body = re.sub(r"%\((\w+)\)s", lambda m: f"${number[m.group(1)]}", sql)
            arguments = ", ".join(f"%({param})s" for param in types)
            sql_types = list(types.values())
        else:
            if sql.count("%s") != len(types):
                raise ValueError(f"{name}: {sql.count('%s')} parameters, {len(types)} types")
            numbered = iter(range(1, len(types) + 1))
            body = re.sub("%s", lambda _: f"${next(numbered)}", sql)
            arguments = ", ".join(["%s"] * len(types))
            sql_types = list(types)
        self.name = name
        self.sql = sql
        # Sent without parameters, so a literal percent sign is no longer escaped.
        body = body.replace("%%", "%")
        self.prepare = f"PREPARE {name} ({', '.join(sql_types)}) AS {body}"
        self.execute = f"EXECUTE {name} ({arguments})"
        self._held_by: weakref.WeakSet = weakref.WeakSet()  # psycopg connections holding it

    def sql_to_send(self) -> str:
        """The text to send with the named parameters on Django's connection: EXECUTE once
        this session holds the statement (preparing it first, one round trip a session),
        the whole statement where preparing is off or the database is not PostgreSQL."""
        if connection.vendor != "postgresql" or connection.settings_dict.get(
            "DISABLE_SERVER_SIDE_CURSORS"
        ):
            return self.sql
        connection.ensure_connection()
        raw = connection.connection
        if raw not in self._held_by:
            with connection.cursor() as cursor:
                # A prepared statement belongs to the session, not to the transaction: it
                # outlives a rollback, and one made on a failed attempt is simply there.
                cursor.execute("SELECT 1 FROM pg_prepared_statements WHERE name = %s", [self.name])
                if cursor.fetchone() is None:
                    cursor.execute(self.prepare)
            self._held_by.add(raw)
        return self.execute
