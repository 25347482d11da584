"""Output: what people read. Terminal tables, Markdown, CSV/JSON on stdout, the HTML page, the plots,
and the regression gate over two result files. It reads rows and never measures."""
