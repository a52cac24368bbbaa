FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY events ./events
COPY projections ./projections
COPY timeline ./timeline
RUN pip install --no-cache-dir .
EXPOSE 8000
CMD ["timeline", "serve", "--host", "0.0.0.0", "--port", "8000"]
