# amqpd in a container: slim Python, non-root, data on a volume.
#   docker build -t amqpd .
#   docker run -p 5672:5672 -v amqpd-data:/var/lib/amqpd \
#              -v $PWD/my-amqpd.yaml:/etc/amqpd/amqpd.yaml amqpd --config /etc/amqpd/amqpd.yaml
# guest/guest only works from loopback (inside the container), as in RabbitMQ: mount a
# config with your own users to connect from outside.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/amqpd
COPY pyproject.toml README.md ./
COPY amqpd ./amqpd
RUN pip install --no-cache-dir . \
    && useradd --system --home-dir /var/lib/amqpd --shell /usr/sbin/nologin amqpd \
    && mkdir -p /var/lib/amqpd /etc/amqpd \
    && chown amqpd:amqpd /var/lib/amqpd
COPY conf/amqpd.yaml /etc/amqpd/amqpd.yaml

USER amqpd
VOLUME /var/lib/amqpd
EXPOSE 5672
ENTRYPOINT ["python", "-m", "amqpd", "--bind", "0.0.0.0", "--data-dir", "/var/lib/amqpd"]
