"""A seeded request is reproducible anywhere: the same `generate` call with the same seed
gives byte-identical text in two separate `textgen serve` processes (over gRPC and REST)
and in this process. (A fresh Python loading the SavedModel with TensorFlow alone:
tests/test_export.py.)"""
from serving.client import GrpcClient, InProcessClient, RestClient
from test_reliability_load import ServeProcess

PROMPTS = ["ROMEO:", "a", "hé hé", "b\n", "cdefg"]
NUM_CHARS, TEMPERATURE, SEED = 12, 0.7, 9


def test_a_seeded_generate_is_byte_identical_across_processes(tiny_serving_dir):
    with InProcessClient(tiny_serving_dir) as client:
        here = client.generate(PROMPTS, NUM_CHARS, TEMPERATURE, seed=SEED)
        # The seed decides the text: another seed, other text (an untrained model samples
        # from nearly uniform distributions).
        assert client.generate(PROMPTS, NUM_CHARS, TEMPERATURE, seed=SEED + 1) != here
    assert all(len(t) == len(p) + NUM_CHARS for t, p in zip(here, PROMPTS))
    servers = [ServeProcess(tiny_serving_dir), ServeProcess(tiny_serving_dir)]
    try:
        assert servers[0].process.pid != servers[1].process.pid
        answers = {}
        for i, server in enumerate(servers):
            for client in (GrpcClient(server.grpc_target, timeout=60),
                           RestClient(server.rest_url, timeout=60)):
                with client:
                    answers[(i, type(client).__name__)] = client.generate(
                        PROMPTS, NUM_CHARS, TEMPERATURE, seed=SEED)
    finally:
        for server in servers:
            server.stop()
    for where, text in answers.items():
        assert [t.encode() for t in text] == [t.encode() for t in here], where
