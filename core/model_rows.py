"""A model's row read by plain SQL, built into the model as a query builds it.

For a hot statement written by hand (an outbox item's begin, a notice's claim) a raw
queryset or `.get()` sets up more per query than the statement costs to run (about half
a millisecond: the columns matched to fields, converters looked up). Here that is done
once per model: the columns in field order, each value through the converters the SQL
compiler would apply (the backend's, then the field's: JSON decoded, SQLite's times
parsed), then `Model.from_db`.
"""

from django.db import connection
from django.db.models import Model


class ModelRows:
    def __init__(self, model: type[Model]) -> None:
        self.model = model
        self.fields = model._meta.concrete_fields
        self.names = [field.attname for field in self.fields]
        self.table = connection.ops.quote_name(model._meta.db_table)
        self._converters = None  # each field's column and converters, on first use

    def _converters_of(self) -> list[tuple]:
        if self._converters is None:
            table = self.model._meta.db_table
            self._converters = []
            for field in self.fields:
                column = field.get_col(table)
                backend = connection.ops.get_db_converters(column)
                self._converters.append((column, backend + field.get_db_converters(connection)))
        return self._converters

    def columns(self, alias: str) -> str:
        """The select list, in the order `build` takes the values."""
        quote = connection.ops.quote_name
        return ", ".join(f"{alias}.{quote(field.column)}" for field in self.fields)

    def build(self, values) -> Model:
        converted = []
        for (column, converters), value in zip(self._converters_of(), values, strict=True):
            for convert in converters:
                value = convert(value, column, connection)
            converted.append(value)
        return self.model.from_db(connection.alias, self.names, converted)
