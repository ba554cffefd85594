"""Accounting systems behind one small interface (`Ledger`), chosen per tenant's connection."""
