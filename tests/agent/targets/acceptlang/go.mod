module example.com/acceptlang

go 1.18

require golang.org/x/text v0.3.7
