"""The conformance kit: checks a core or an API, in any language, against the contract."""
