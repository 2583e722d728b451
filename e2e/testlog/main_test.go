package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"start","Package":"p"}`,
		`{"Action":"run","Package":"p","Test":"TestA"}`,
		`{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}`,
		`{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:1: noise of a passing test\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestA","Elapsed":1.5}`,
		`{"Action":"run","Package":"p","Test":"TestB"}`,
		`{"Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:9: why it broke\n"}`,
		`{"Action":"output","Package":"p","Test":"TestB","Output":"--- FAIL: TestB (2.00s)\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestB","Elapsed":2}`,
		`{"Action":"output","Package":"p","Output":"FAIL\n"}`,
		`{"Action":"output","Package":"p","Output":"FAIL\tp\t3.5s\n"}`,
		`{"Action":"fail","Package":"p","Elapsed":3.5}`,
		`not json`,
	}, "\n")
	var out bytes.Buffer
	failed, err := run(strings.NewReader(in), &out, func() time.Time { return time.Unix(0, 0) })
	if err != nil || !failed {
		t.Fatalf("failed=%v err=%v", failed, err)
	}
	got := out.String()
	for _, want := range []string{"=== RUN   TestA\n", "--- PASS  TestA (1.5s)", "=== RUN   TestB", "b_test.go:9: why it broke", "--- FAIL  TestB (2.0s)", "FAIL\tp\t3.5s\n", "not json\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "noise of a passing test") {
		t.Errorf("a passing test's log was printed:\n%s", got)
	}

	failed, err = run(strings.NewReader(`{"Action":"pass","Package":"p","Test":"TestA"}`+"\n"+`{"Action":"output","Package":"p","Output":"ok  \tp\t1s\n"}`), &out, time.Now)
	if err != nil || failed {
		t.Fatalf("passing run: failed=%v err=%v", failed, err)
	}
}
