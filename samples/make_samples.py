"""Build samples/bookshop.sqlite deterministically (``python samples/make_samples.py``).

A small bookshop: authors, genres, books, customers, orders, order_items. Rows are generated from fixed lists
with a seeded RNG, so the file is reproducible; questions.jsonl's gold answers are computed on it.
"""

from __future__ import annotations

import random
import sqlite3
import sys
from pathlib import Path

SCHEMA = """
CREATE TABLE authors (
  author_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  country TEXT NOT NULL,
  birth_year INTEGER
);
CREATE TABLE genres (
  genre_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL
);
CREATE TABLE books (
  book_id INTEGER PRIMARY KEY,
  title TEXT NOT NULL,
  author_id INTEGER NOT NULL REFERENCES authors(author_id),
  genre_id INTEGER NOT NULL REFERENCES genres(genre_id),
  published_year INTEGER NOT NULL,
  price REAL NOT NULL,
  pages INTEGER NOT NULL
);
CREATE TABLE customers (
  customer_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  city TEXT NOT NULL,
  joined_year INTEGER NOT NULL
);
CREATE TABLE orders (
  order_id INTEGER PRIMARY KEY,
  customer_id INTEGER NOT NULL REFERENCES customers(customer_id),
  order_date TEXT NOT NULL,
  status TEXT NOT NULL
);
CREATE TABLE order_items (
  order_id INTEGER NOT NULL REFERENCES orders(order_id),
  book_id INTEGER NOT NULL REFERENCES books(book_id),
  quantity INTEGER NOT NULL,
  PRIMARY KEY (order_id, book_id)
);
"""

AUTHORS = [
    ("Chinua Achebe", "Nigeria", 1930), ("Margaret Atwood", "Canada", 1939), ("Jorge Luis Borges", "Argentina", 1899),
    ("Italo Calvino", "Italy", 1923), ("Agatha Christie", "United Kingdom", 1890), ("Umberto Eco", "Italy", 1932),
    ("Gabriel Garcia Marquez", "Colombia", 1927), ("Ursula K. Le Guin", "United States", 1929),
    ("Haruki Murakami", "Japan", 1949), ("Toni Morrison", "United States", 1931),
    ("Terry Pratchett", "United Kingdom", 1948), ("Zadie Smith", "United Kingdom", 1975),
]
GENRES = ["Fiction", "Fantasy", "Mystery", "Science Fiction", "Essays", "Poetry"]
BOOKS = [  # title, author index, genre index, year, pages
    ("Things Fall Apart", 0, 0, 1958, 209), ("Arrow of God", 0, 0, 1964, 287),
    ("The Handmaid's Tale", 1, 3, 1985, 311), ("Oryx and Crake", 1, 3, 2003, 376), ("Alias Grace", 1, 0, 1996, 470),
    ("Ficciones", 2, 1, 1944, 174), ("The Aleph", 2, 1, 1949, 210), ("Labyrinths", 2, 4, 1962, 256),
    ("Invisible Cities", 3, 1, 1972, 165), ("If on a Winter's Night a Traveler", 3, 0, 1979, 260),
    ("Murder on the Orient Express", 4, 2, 1934, 256), ("And Then There Were None", 4, 2, 1939, 272),
    ("The Murder of Roger Ackroyd", 4, 2, 1926, 312), ("The Name of the Rose", 5, 2, 1980, 536),
    ("Foucault's Pendulum", 5, 0, 1988, 641), ("One Hundred Years of Solitude", 6, 0, 1967, 417),
    ("Love in the Time of Cholera", 6, 0, 1985, 348), ("A Wizard of Earthsea", 7, 1, 1968, 183),
    ("The Left Hand of Darkness", 7, 3, 1969, 304), ("The Dispossessed", 7, 3, 1974, 387),
    ("Kafka on the Shore", 8, 1, 2002, 505), ("Norwegian Wood", 8, 0, 1987, 296), ("1Q84", 8, 1, 2009, 928),
    ("Beloved", 9, 0, 1987, 324), ("Song of Solomon", 9, 0, 1977, 337), ("Guards! Guards!", 10, 1, 1989, 288),
    ("Small Gods", 10, 1, 1992, 284), ("Going Postal", 10, 1, 2004, 394), ("White Teeth", 11, 0, 2000, 448),
    ("On Beauty", 11, 0, 2005, 445), ("Feel Free", 11, 4, 2018, 464), ("The Lathe of Heaven", 7, 3, 1971, 184),
]
FIRST = ["Ana", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam",
         "Maya", "Nils", "Olga", "Pablo", "Queenie", "Rosa", "Sami", "Tara", "Uma", "Victor", "Wen", "Yusuf"]
LAST = ["Silva", "Okafor", "Nguyen", "Muller", "Rossi", "Kowalski", "Haddad", "Tanaka", "Garcia", "Larsen"]
CITIES = ["Lisbon", "Berlin", "Toronto", "Lagos", "Osaka", "Milan", "Bogota", "Seattle"]
STATUSES = ["delivered", "delivered", "delivered", "shipped", "cancelled"]


def build(path: Path) -> Path:
    rng = random.Random(20251124)
    if path.exists():
        path.unlink()
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.executemany("INSERT INTO authors VALUES (?, ?, ?, ?)", [(i + 1, *a) for i, a in enumerate(AUTHORS)])
    conn.executemany("INSERT INTO genres VALUES (?, ?)", [(i + 1, g) for i, g in enumerate(GENRES)])
    books = []
    for i, (title, a, g, year, pages) in enumerate(BOOKS):
        price = round(rng.uniform(7.5, 29.5), 2)
        books.append((i + 1, title, a + 1, g + 1, year, price, pages))
    conn.executemany("INSERT INTO books VALUES (?, ?, ?, ?, ?, ?, ?)", books)
    customers = []
    for i in range(40):
        name = f"{FIRST[i % len(FIRST)]} {LAST[(i * 7) % len(LAST)]}"
        customers.append((i + 1, name, rng.choice(CITIES), rng.randint(2015, 2024)))
    conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)", customers)
    orders, items = [], []
    for oid in range(1, 151):
        cid = rng.randint(1, 34)  # customers 35..40 never ordered
        month, day = rng.randint(1, 12), rng.randint(1, 28)
        year = rng.choice([2023, 2024, 2024, 2025])
        orders.append((oid, cid, f"{year}-{month:02d}-{day:02d}", rng.choice(STATUSES)))
        for bid in rng.sample(range(1, len(BOOKS) + 1), rng.randint(1, 4)):
            items.append((oid, bid, rng.choice([1, 1, 1, 2, 3])))
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", orders)
    conn.executemany("INSERT INTO order_items VALUES (?, ?, ?)", items)
    conn.commit()
    conn.execute("VACUUM")
    conn.close()
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("bookshop.sqlite")
    print(build(out))
