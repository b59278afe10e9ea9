"""The body of each path of the soak origin: deterministic, so the client checks every byte."""


def large_size(path):
    try:
        k = int(path.split("/")[2].split("?")[0])
    except (IndexError, ValueError):
        k = 0
    return (64 << 10) * (1 + k % 32)  # 64 KiB .. 2 MiB


def body_for(path):
    size = large_size(path) if path.startswith("/large/") else 64 + len(path)
    seed = (path + "|").encode()
    return (seed * (size // len(seed) + 1))[:size]
