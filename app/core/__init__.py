"""What every domain of the API shares: settings, database, ORM models, errors, auth, limits,
logging, the queue producer and the artifact store."""
