"""Writes seed requests for the wire_split fuzz target with the real
OpenTelemetry protobuf classes (a different encoder from prost).

    .venv/bin/python scripts/gen_fuzz_seeds.py proto/fuzz/corpus/wire_split
"""
import os
import sys

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def kv(key, **value):
    return KeyValue(key=key, value=AnyValue(**value))


def request(n_resources, n_spans, nested):
    req = ExportTraceServiceRequest()
    for r in range(n_resources):
        rs = req.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
        rs.resource.attributes.append(kv("service.name", string_value=f"svc-{r}"))
        ss = rs.scope_spans.add()
        ss.scope.name = "lib"
        for i in range(n_spans):
            s = ss.spans.add(
                trace_id=bytes([i % 3 + 1] * 16),
                span_id=bytes([i + 1] * 8),
                name=f"op-{i}",
                kind=2,
                start_time_unix_nano=1000 + i,
                end_time_unix_nano=2000 + i,
                trace_state="ot=th:c",
            )
            if i:
                s.parent_span_id = bytes([1] * 8)
            s.attributes.append(kv("http.status_code", int_value=200 + i))
            s.attributes.append(kv("ok", bool_value=True))
            s.attributes.append(kv("ratio", double_value=0.5))
            if nested:
                s.attributes.append(kv("list", array_value=ArrayValue(values=[AnyValue(string_value="a")])))
                s.attributes.append(kv("map", kvlist_value=KeyValueList(values=[kv("k", bytes_value=b"\x00")])))
                ev = s.events.add(name="exception", time_unix_nano=5)
                ev.attributes.append(kv("exception.type", string_value="E"))
                link = s.links.add(trace_id=bytes([9] * 16), span_id=bytes([9] * 8))
            if i % 2:
                s.status.code = 2
                s.status.message = "boom"
    return req.SerializeToString()


seeds = {
    "empty": b"",
    "one_span": request(1, 1, False),
    "mixed_traces": request(2, 5, False),
    "nested_values": request(1, 3, True),
    "many_resources": request(4, 2, True),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {out}")
