"""Starts moto's server with corrections applied (filled in below)."""
import argparse
from moto.server import ThreadedMotoServer

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    a = p.parse_args()
    from moto.server import main as moto_main
    moto_main([ "-H", a.host, "-p", str(a.port)])

if __name__ == "__main__":
    main()
