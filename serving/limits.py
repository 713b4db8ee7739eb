"""Every limit the prediction service sets on a request, with its default.

Kept apart, with no imports, so that ``python serving/app.py --help`` can show
the defaults without loading the web server or Keras. The server's flags
override them; ``serving/README.md`` explains each.
"""

#: Largest picture, in pixels, checked on its header before decoding (``--max-pixels``).
MAX_PIXELS = 40_000_000
#: Longest side over shortest side of a picture; longer strips get 422.
MAX_ASPECT = 20
#: Models taking any image size get pictures scaled down to at most this many pixels.
MAX_OWN_SIZE_PIXELS = 1024 * 1024
#: Memory that all requests decoding at once may use, in MB (``--decode-memory-mb``).
DECODE_MEMORY_MB = 1024
#: Seconds a request waits for decoding memory before it gets 503 (``--decode-wait``).
DECODE_WAIT_SECONDS = 5.0
#: Seconds a client has to send a request's headers (``--header-timeout``).
HEADER_TIMEOUT = 10.0
#: Seconds a client has to send a request's body once the headers are in (``--body-timeout``).
BODY_TIMEOUT = 60.0
#: Seconds an idle kept-alive connection stays open (``--keep-alive-timeout``).
KEEP_ALIVE_TIMEOUT = 5
#: Open connections or requests beyond which new requests get 503 (``--max-connections``).
MAX_CONNECTIONS = 100
#: Largest request head (request line and headers) in bytes; bigger ones get 400.
MAX_HEADER_BYTES = 16 * 1024
