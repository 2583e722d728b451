package transport

import "net/http"

// Browser-like request headers, so that the HTTP requests under the TLS layer
// (seen by CDNs and by servers that log them) look like those of the browser the
// ClientHello imitates, as Xray-core's clients send them.
const (
	chromeUA  = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36"
	chromeCH  = `"Chromium";v="140", "Not=A?Brand";v="24", "Google Chrome";v="140"`
	firefoxUA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0"
	safariUA  = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Safari/605.1.15"
)

// browserHeaders sets the headers of fingerprint's browser on h, for a request
// of kind "ws" (an upgrade) or "fetch" (a script's request), keeping what h has.
func browserHeaders(h http.Header, fingerprint, kind string) {
	if h.Get("User-Agent") != "" {
		return
	}
	chromium := true
	switch fingerprint {
	case "firefox":
		h.Set("User-Agent", firefoxUA)
		h.Set("Accept-Language", "en-US,en;q=0.5")
		chromium = false
	case "safari", "ios":
		h.Set("User-Agent", safariUA)
		h.Set("Accept-Language", "en-US,en;q=0.9")
		chromium = false
	default:
		h.Set("User-Agent", chromeUA)
		h.Set("Sec-Ch-Ua", chromeCH)
		h.Set("Sec-Ch-Ua-Mobile", "?0")
		h.Set("Sec-Ch-Ua-Platform", `"Windows"`)
		h.Set("Accept-Language", "en-US,en;q=0.9")
	}
	set := func(k, v string) {
		if h.Get(k) == "" {
			h.Set(k, v)
		}
	}
	set("Accept", "*/*")
	set("Cache-Control", "no-cache")
	set("Pragma", "no-cache")
	h.Set("Sec-Fetch-Dest", "empty")
	h.Set("Sec-Fetch-Site", "same-origin")
	if kind == "ws" {
		h.Set("Sec-Fetch-Mode", "websocket")
		return
	}
	h.Set("Sec-Fetch-Mode", "cors")
	if chromium {
		set("Priority", "u=1, i")
	}
}
