# The same image runs the API (`reference serve`) and the core workers (`reference worker`).
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY reference ./reference
COPY adapters ./adapters
COPY fakes ./fakes
COPY scenarios ./scenarios
COPY loadtests ./loadtests
RUN pip install --no-cache-dir . && useradd --system --uid 10001 app

USER app
ENV REFERENCE_HOST=0.0.0.0 \
    REFERENCE_PORT=8000 \
    PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1
CMD ["reference", "serve"]
