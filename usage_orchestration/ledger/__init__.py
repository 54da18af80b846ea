"""Reading the platform's credit ledger (never writing it): SQL or the Usage Reporting API."""
