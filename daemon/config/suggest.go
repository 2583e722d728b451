package config

// closest returns the name in known nearest to name by edit distance, when it is near
// enough to be a likely typo (at most 2 edits, and fewer than half the name's length);
// "" otherwise.
func closest(name string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		d := editDistance(name, k)
		if d < bestDist && 2*d < len(name) {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance counts the insertions, deletions, substitutions and swaps of two
// neighbours that turn a into b (optimal string alignment), over bytes: option and
// service names are ASCII.
func editDistance(a, b string) int {
	rows := make([][]int, len(a)+1)
	for i := range rows {
		rows[i] = make([]int, len(b)+1)
		rows[i][0] = i
	}
	for j := range rows[0] {
		rows[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d := min(rows[i-1][j]+1, rows[i][j-1]+1, rows[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d = min(d, rows[i-2][j-2]+1)
			}
			rows[i][j] = d
		}
	}
	return rows[len(a)][len(b)]
}
