package transport

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

func TestParseExtra(t *testing.T) {
	for _, tc := range []struct {
		name    string
		extra   string
		padding string
		ignored []string
		err     string
		check   func(*xhttpConfig) bool
	}{
		{name: "empty", check: func(c *xhttpConfig) bool {
			return c.padding == Range{100, 1000} && c.method == "POST" && c.maxPost == Range{1000000, 1000000} && c.interval == Range{30, 30} && !c.muxSet
		}},
		// As Marzban writes it: numbers, and fields Xray dropped.
		{name: "marzban", extra: `{"scMaxEachPostBytes": 1000000, "scMaxConcurrentPosts": 100, "scMinPostsIntervalMs": 30, "xPaddingBytes": "100-1000", "noGRPCHeader": false, "keepAlivePeriod": 10}`,
			ignored: []string{"keepAlivePeriod", "scMaxConcurrentPosts"}},
		// As 3x-ui writes it: strings, obfs mode, both names of the session fields, headers.
		{name: "3x-ui", extra: `{"mode":"packet-up","xPaddingBytes":"50-60","xPaddingObfsMode":true,"xPaddingKey":"k","xPaddingHeader":"X-K","xPaddingPlacement":"header","xPaddingMethod":"tokenish","sessionIDPlacement":"query","sessionPlacement":"query","sessionIDKey":"s","sessionKey":"s","seqPlacement":"cookie","uplinkDataPlacement":"body","scMaxEachPostBytes":"500000-600000","headers":{"X-Forwarded-For":"1.2.3.4"},"noSSEHeader":true,"xmux":{"maxConcurrency":"2-4","hMaxRequestTimes":"100-200","hMaxReusableSecs":"60-90","hKeepAlivePeriod":30}}`,
			ignored: []string{"noSSEHeader", "xmux.hKeepAlivePeriod"},
			check: func(c *xhttpConfig) bool {
				return c.padding == Range{50, 60} && c.obfs && c.padMethod == "tokenish" && c.padHeader == "X-K" && c.sessPlace == "query" &&
					c.sessKey == "s" && c.seqKey == "x_seq" && c.maxPost == Range{500000, 600000} && c.headers["X-Forwarded-For"] == "1.2.3.4" &&
					c.muxSet && c.mux.maxConcurrency == Range{2, 4} && c.mux.maxRequests == Range{100, 200}
			}},
		{name: "range object", extra: `{"xPaddingBytes":{"from":10,"to":20}}`, check: func(c *xhttpConfig) bool { return c.padding == Range{10, 20} }},
		{name: "padding option", padding: "300-400", check: func(c *xhttpConfig) bool { return c.padding == Range{300, 400} }},
		{name: "padding agrees", padding: "300-400", extra: `{"xPaddingBytes":"300-400"}`},
		{name: "padding disagrees", padding: "300-400", extra: `{"xPaddingBytes":"100-1000"}`, err: "extra: xPaddingBytes: 100-1000 differs from padding_bytes 300-400"},
		{name: "padding zero", extra: `{"xPaddingBytes":0}`, err: "extra: xPaddingBytes"},
		{name: "download settings", extra: `{"downloadSettings":{"address":"x"}}`, err: "extra: downloadSettings: not supported"},
		{name: "unknown field", extra: `{"xPaddingBytes":"1-2","fancyNewThing":1}`, err: "extra: fancyNewThing: unknown field"},
		{name: "session table", extra: `{"sessionIDTable":"abc"}`, err: "extra: sessionIDTable: not supported"},
		{name: "host header", extra: `{"headers":{"Host":"x"}}`, err: "must not hold Host"},
		{name: "bad placement", extra: `{"sessionPlacement":"body"}`, err: `extra: sessionPlacement: "body" is not supported`},
		{name: "xmux both", extra: `{"xmux":{"maxConcurrency":2,"maxConnections":3}}`, err: "maxConnections cannot be set together"},
		{name: "xmux unknown", extra: `{"xmux":{"maxStreams":2}}`, err: "xmux: maxStreams: unknown field"},
		{name: "not json", extra: `{"a":`, err: "extra: not a JSON object"},
		{name: "array", extra: `[1]`, err: "extra: not a JSON object"},
		{name: "trailing", extra: `{} {}`, err: "data after the object"},
		{name: "bad range", extra: `{"scMaxEachPostBytes":"9-1"}`, err: "scMaxEachPostBytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, ignored, err := parseExtra(tc.extra, tc.padding)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				var oe *OptionError
				if !errors.As(err, &oe) {
					t.Fatalf("error %v is not an OptionError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(ignored, tc.ignored) {
				t.Errorf("ignored %q, want %q", ignored, tc.ignored)
			}
			if tc.check != nil && !tc.check(c) {
				t.Errorf("config %+v", c)
			}
		})
	}
}

// TestXHTTPCheckModes: settings that need packet-up are refused with another mode.
func TestXHTTPCheckModes(t *testing.T) {
	for _, tc := range []struct {
		extra, mode, err string
	}{
		{`{"uplinkDataPlacement":"header"}`, ModeStreamUp, "uplinkDataPlacement header needs mode packet-up"},
		{`{"uplinkHTTPMethod":"get"}`, ModeStreamOne, "uplinkHTTPMethod GET needs mode packet-up"},
		{`{"uplinkHTTPMethod":"GET"}`, ModePacketUp, "carries no body"},
		{`{"uplinkHTTPMethod":"GET","uplinkDataPlacement":"header"}`, ModePacketUp, ""},
	} {
		_, err := newXHTTP(Options{Type: XHTTP, Extra: tc.extra, Mode: tc.mode}, nil)
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s %s: error %v, want %q", tc.extra, tc.mode, err, tc.err)
		}
	}
}

// TestXHTTPRequests: where a request carries padding, session and sequence number.
func TestXHTTPRequests(t *testing.T) {
	tr, err := newXHTTP(Options{Type: XHTTP, Path: "/base?q=1", Host: "cdn.example.org", Mode: ModePacketUp}, nil)
	if err != nil {
		t.Fatal(err)
	}
	x := tr.(*xhttpTransport)
	data := &chunks{}
	data.append([]byte("data"))
	req := x.postRequest(t.Context(), "sess", 7, data)
	if req.URL.Path != "/base/sess/7" || req.URL.RawQuery != "q=1" || req.Host != "cdn.example.org" || req.Method != http.MethodPost || req.ContentLength != 4 {
		t.Fatalf("request %s %s host %s length %d", req.Method, req.URL, req.Host, req.ContentLength)
	}
	ref := req.Header.Get("Referer")
	pad, ok := strings.CutPrefix(ref, "https://cdn.example.org/base/?x_padding=")
	if !ok || len(pad) < 100 || len(pad) > 1000 || strings.Trim(pad, "X") != "" {
		t.Fatalf("Referer %q", ref)
	}
	if req.Header.Get("Content-Type") != "" {
		t.Errorf("a packet-up post has a content type")
	}
	if body, _ := io.ReadAll(req.Body); string(body) != "data" {
		t.Errorf("post body %q", body)
	}
	down := x.request(t.Context(), http.MethodPost, "", "", strings.NewReader(""), true)
	if down.Header.Get("Content-Type") != "application/grpc" || down.URL.Path != "/base/" {
		t.Errorf("stream-one request %s with %q", down.URL, down.Header.Get("Content-Type"))
	}
}

// TestTokenish: the padding's HPACK Huffman length is what was asked for, as
// Xray's server measures it.
func TestTokenish(t *testing.T) {
	for n := 1; n < 1200; n += 37 {
		s := tokenish(n)
		if l := int(hpack.HuffmanEncodeLength(s)); l < n-2 || l > n+2 {
			t.Fatalf("tokenish(%d) encodes to %d bytes", n, l)
		}
		if strings.Trim(s, base62) != "" {
			t.Fatalf("tokenish(%d) = %q: not base62", n, s)
		}
	}
}

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Range
		ok   bool
	}{
		{"100-1000", Range{100, 1000}, true}, {"5", Range{5, 5}, true}, {" 1 - 2 ", Range{1, 2}, true},
		{"2-1", Range{}, false}, {"-1", Range{}, false}, {"a", Range{}, false}, {"1-99999999", Range{}, false}, {"", Range{}, false},
	} {
		got, err := parseRange(tc.in, 1<<20)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseRange(%q) = %v, %v", tc.in, got, err)
		}
	}
}

// FuzzParseExtra: any text gives a configuration or an OptionError naming extra
// (or padding_bytes), never a panic.
func FuzzParseExtra(f *testing.F) {
	f.Add(`{"xPaddingBytes":"100-1000","xmux":{"maxConcurrency":"16-32"}}`, "")
	f.Add(`{"headers":{"a":"b"},"scMaxEachPostBytes":{"from":1,"to":2}}`, "1-2")
	f.Add(`{"uplinkChunkSize":3}`, "0")
	f.Fuzz(func(t *testing.T, extra, padding string) {
		c, _, err := parseExtra(extra, padding)
		if err != nil {
			var oe *OptionError
			if !errors.As(err, &oe) || (oe.Option != "extra" && oe.Option != "padding_bytes") {
				t.Fatalf("error %v names no option", err)
			}
			return
		}
		if c.padding.From <= 0 || c.maxPost.From <= 0 || c.chunk.From < 0 {
			t.Fatalf("accepted a configuration with padding %v, post size %v", c.padding, c.maxPost)
		}
	})
}

// TestChunks: data goes in and comes out whole across pieces.
func TestChunks(t *testing.T) {
	in := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320000 bytes: five pieces
	var c chunks
	for p := in; len(p) > 0; {
		k := c.append(p[:min(len(p), 7777)])
		p = p[k:]
	}
	if c.n != len(in) || len(c.bufs) != 5 {
		t.Fatalf("%d bytes in %d pieces", c.n, len(c.bufs))
	}
	got, _ := io.ReadAll(c.reader())
	if !bytes.Equal(got, in) || !bytes.Equal(c.bytes(), in) {
		t.Fatal("the data differs")
	}
	c.release()
	if c.n != 0 || c.bufs != nil {
		t.Fatal("not empty after release")
	}
}
