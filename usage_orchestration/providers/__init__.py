"""Provider clients: request, paginate, parse (pydantic), normalize. No Dagster imports here."""
