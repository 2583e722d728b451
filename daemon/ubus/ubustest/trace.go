package ubustest

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// TraceConn is one connection of a `socat -x` capture between ubusd and a peer.
type TraceConn struct {
	// Chunks are the reads and writes in capture order.
	Chunks []TraceChunk
	// FromBroker and ToBroker are each direction's bytes, concatenated: one chunk may
	// hold several messages, and a message may span chunks.
	FromBroker, ToBroker []byte
}

// TraceChunk is one line of the capture.
type TraceChunk struct {
	FromBroker bool // "<": ubusd to the peer
	Data       []byte
}

// ReadTrace parses a socat -x capture: a header line "< time length=N from=A to=B" (or
// ">") and a line of hex per chunk. A new connection begins where ubusd's byte count
// restarts at 0 (its HELLO). Lengths and offsets are checked, so a gap or a garbled line
// is an error rather than a silently shifted stream.
func ReadTrace(r io.Reader) ([]TraceConn, error) {
	var conns []TraceConn
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		head := strings.TrimSpace(sc.Text())
		if head == "" {
			continue
		}
		dir := head[0]
		if dir != '<' && dir != '>' {
			return nil, fmt.Errorf("trace line %d: want a < or > header, got %q", line, head)
		}
		n, from, err := traceHeader(head)
		if err != nil {
			return nil, fmt.Errorf("trace line %d: %w", line, err)
		}
		if !sc.Scan() {
			return nil, fmt.Errorf("trace line %d: header without data", line)
		}
		line++
		data, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(sc.Text()), " ", ""))
		if err != nil {
			return nil, fmt.Errorf("trace line %d: %w", line, err)
		}
		if len(data) != n {
			return nil, fmt.Errorf("trace line %d: %d bytes, header says %d", line, len(data), n)
		}
		fromBroker := dir == '<'
		if fromBroker && from == 0 {
			conns = append(conns, TraceConn{})
		}
		if len(conns) == 0 {
			return nil, fmt.Errorf("trace line %d: data before ubusd's first bytes", line)
		}
		c := &conns[len(conns)-1]
		stream := &c.ToBroker
		if fromBroker {
			stream = &c.FromBroker
		}
		if from != len(*stream) {
			return nil, fmt.Errorf("trace line %d: chunk at offset %d, stream has %d bytes", line, from, len(*stream))
		}
		*stream = append(*stream, data...)
		c.Chunks = append(c.Chunks, TraceChunk{FromBroker: fromBroker, Data: data})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return conns, nil
}

// traceHeader reads length= and from= of a header line.
func traceHeader(head string) (length, from int, err error) {
	length, from = -1, -1
	for _, f := range strings.Fields(head) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch k {
		case "length":
			length, err = strconv.Atoi(v)
		case "from":
			from, err = strconv.Atoi(v)
		}
		if err != nil {
			return 0, 0, fmt.Errorf("header %q: %w", head, err)
		}
	}
	if length < 0 || from < 0 {
		return 0, 0, fmt.Errorf("header %q lacks length= or from=", head)
	}
	return length, from, nil
}
