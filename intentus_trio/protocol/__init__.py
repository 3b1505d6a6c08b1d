"""The IntentusNet wire protocol: models, codec, errors and version negotiation."""
