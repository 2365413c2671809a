"""What the API, the workers and the migrations share, free of FastAPI: settings, the database (models,
sessions, retries, migrations), the job store, queue task names and the broker, file storage, ids."""
