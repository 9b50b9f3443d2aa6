package main

import (
	"bufio"
	"fmt"
	"os"

	"golang.org/x/text/language"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		tags, _, err := language.ParseAcceptLanguage(in.Text())
		fmt.Println(len(tags), err)
	}
}
