"""What the relay's producer sends arrives whole and in order, whatever the size of a record against
the producer's batch (records are batched up to a megabyte: most of a relay's send goes in one)."""
import uuid

from aiokafka import TopicPartition

from payloop.kafka import ensure_topics, make_consumer, make_producer
from payloop.settings import platform_settings


async def test_records_smaller_and_larger_than_a_batch_arrive_whole_and_in_order(infra):
    settings = platform_settings()
    topic = f"test.producer-batches.{uuid.uuid4().hex[:8]}"
    await ensure_topics([topic], settings)
    values = [f"small-{n}".encode() * 50 for n in range(300)]
    values.insert(150, b"L" * (3 * 1024 * 1024))  # larger than a batch: a batch of its own
    producer = make_producer(settings)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=b"one-key") for value in values]
        sent = [await future for future in futures]
    finally:
        await producer.stop()
    offsets = [metadata.offset for metadata in sent]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(values)
    assert len({metadata.partition for metadata in sent}) == 1  # one key, one partition

    consumer = make_consumer(group_id=None, settings=settings)
    await consumer.start()
    try:
        partition = TopicPartition(topic, sent[0].partition)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        received: list[bytes] = []
        while len(received) < len(values):
            batch = await consumer.getmany(partition, timeout_ms=5_000)
            assert batch, f"only {len(received)} of {len(values)} records came back"
            received += [record.value for record in batch[partition]]
    finally:
        await consumer.stop()
    assert received == values
