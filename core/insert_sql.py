"""A model instance's INSERT as Django would send it, for a caller that sends it inside a
larger statement (a data-modifying CTE: two rows that reference each other written in one
round trip). Values are prepared by their fields and expressions compiled, exactly as
`Model.save()` would; only the sending is the caller's."""

from django.db import router
from django.db.models import Model
from django.db.models.sql.subqueries import InsertQuery


def insert_sql(obj: Model, *, returning: str) -> tuple[str, list]:
    model = type(obj)
    meta = model._meta
    fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field]
    query = InsertQuery(model)
    query.insert_values(fields, [obj])
    [(sql, params)] = query.get_compiler(using=router.db_for_write(model)).as_sql()
    return f"{sql} RETURNING {returning}", list(params)
