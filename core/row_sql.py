"""A model's INSERT and UPDATE written once from its fields, prepared once per session.

Django compiles every `create()`, `save()` and `update()` afresh and PostgreSQL plans
every statement it is sent: about a tenth of a millisecond on each side, more for an
update's filter, for rows whose statement never changes but for its values (a retry's
decision, case, transition, notice, outcome event, and the item's close). Here the
statement's text comes from the model's concrete fields once, with one named parameter
per column (`%(<prefix><attname>)s`, so two models' rows can share a statement), and each
parameter's SQL type is the field's own, for `core.prepared`. The values are still
prepared by the fields, as Django prepares them (`pre_save`, `get_db_prep_save`): JSON,
times and choices convert as they always do.
"""

from django.db import connection
from django.db.models import Field, Model

from core.prepared import PreparedStatement


def _columns(model: type[Model]) -> list[Field]:
    meta = model._meta
    return [field for field in meta.local_concrete_fields if field is not meta.auto_field]


def insert_sql(
    model: type[Model], *, prefix: str = "", values: dict[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    """`INSERT INTO <table> (<every column but the id>) VALUES (...)` and each parameter's
    SQL type. `values` replaces columns' parameters (by attname) with SQL expressions,
    which may name the statement's other parameters."""
    values = values or {}
    quote = connection.ops.quote_name
    columns, placeholders, types = [], [], {}
    for field in _columns(model):
        columns.append(quote(field.column))
        if field.attname in values:
            placeholders.append(values[field.attname])
        else:
            placeholders.append(f"%({prefix}{field.attname})s")
            types[prefix + field.attname] = field.db_type(connection)
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(columns)}) "
        f"VALUES ({', '.join(placeholders)})"
    )
    return sql, types


def insert_params(obj: Model, *, prefix: str = "", skip: tuple[str, ...] = ()) -> dict:
    """`obj`'s values for `insert_sql`'s parameters, prepared by their fields."""
    return {
        prefix + field.attname: field.get_db_prep_save(field.pre_save(obj, True), connection)
        for field in _columns(type(obj))
        if field.attname not in skip
    }


class RowInsert:
    """One model's row, prepared. Columns given as `values` (SQL expressions, by attname)
    come back from the INSERT onto the saved object, as the id does."""

    def __init__(self, name: str, model: type[Model], *, values: dict[str, str] | None = None):
        sql, types = insert_sql(model, values=values)
        self.computed = tuple(values or ())
        quote = connection.ops.quote_name
        meta = model._meta
        returning = ", ".join(
            quote(column)
            for column in [meta.pk.column, *(meta.get_field(a).column for a in self.computed)]
        )
        self.statement = PreparedStatement(name, f"{sql} RETURNING {returning}", types)

    def send(self, obj: Model) -> None:
        """Insert `obj`. Elsewhere than PostgreSQL (the embedded default), `Model.save()`
        (the computed columns set on `obj` as Django's expressions)."""
        if connection.vendor != "postgresql":
            obj.save(force_insert=True)
            if self.computed:
                obj.refresh_from_db(fields=list(self.computed))
            return
        with connection.cursor() as cursor:
            cursor.execute(self.statement.sql_to_send(), insert_params(obj, skip=self.computed))
            obj.pk, *computed = cursor.fetchone()
        for attname, value in zip(self.computed, computed, strict=True):
            setattr(obj, attname, value)
        obj._state.adding = False


class RowUpdate:
    """Columns of a model's rows set under a fixed condition (`where`, its own named
    parameters typed by `where_types`): one prepared statement per set of columns written
    (a handful: an item closes done, failed or deferred). The condition is plain SQL, the
    same on SQLite (where the statement is sent whole)."""

    def __init__(
        self, name: str, model: type[Model], *, where: str, where_types: dict[str, str]
    ) -> None:
        self.name, self.model, self.where, self.where_types = name, model, where, where_types
        self.fields = {field.attname: field for field in _columns(model)}
        self._statements: dict[tuple[str, ...], PreparedStatement] = {}

    def send(self, values: dict[str, object], **where) -> int:
        """Set `values` (by attname) where the condition holds; how many rows changed."""
        columns = tuple(values)
        statement = self._statements.get(columns) or self._prepare(columns)
        params = {
            name: self.fields[name].get_db_prep_save(value, connection)
            for name, value in values.items()
        }
        with connection.cursor() as cursor:
            cursor.execute(statement.sql_to_send(), params | where)
            return cursor.rowcount

    def _prepare(self, columns: tuple[str, ...]) -> PreparedStatement:
        if clash := set(columns) & set(self.where_types):
            raise ValueError(f"{self.name}: {sorted(clash)} both set and in the condition")
        quote = connection.ops.quote_name
        sets = ", ".join(f"{quote(self.fields[name].column)} = %({name})s" for name in columns)
        types = {name: self.fields[name].db_type(connection) for name in columns}
        statement = PreparedStatement(
            f"{self.name}_{len(self._statements)}",
            f"UPDATE {quote(self.model._meta.db_table)} SET {sets} WHERE {self.where}",
            types | self.where_types,
        )
        self._statements[columns] = statement
        return statement
