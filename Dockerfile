# nnverify: one image for the API and the workers. TORCH_SPEC is the pip argument that installs
# torch: the default takes PyPI's build (CUDA-capable, which the GPU worker needs); pass a CPU-only
# wheel or index to keep the API/CPU image small.
FROM python:3.11-slim
ARG TORCH_SPEC="torch==2.13.0"
WORKDIR /app
ENV PYTHONUNBUFFERED=1 NNVERIFY_DATA=/data
COPY pyproject.toml constraints.txt README.md ./
COPY verifier ./verifier
COPY workers ./workers
COPY benchmarks ./benchmarks
RUN pip install --no-cache-dir $TORCH_SPEC \
 && pip install --no-cache-dir -c constraints.txt '.[service]'
RUN useradd --create-home --uid 10001 nnverify && mkdir -p /data && chown nnverify /data
USER nnverify
VOLUME ["/data"]
EXPOSE 8000
CMD ["nnverify", "serve", "--host", "0.0.0.0", "--port", "8000"]
