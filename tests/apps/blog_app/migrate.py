"""The blog's migration (prestart.sh runs it): the demo's own schema.sql, once, and a welcome
entry, in BLOG_DB_NAME on BLOG_DB_HOST:BLOG_DB_PORT. Done before the instances start, so two
instances never race to create the tables."""

import os

import psycopg2

connection = psycopg2.connect(
    host=os.environ.get("BLOG_DB_HOST", "127.0.0.1"),
    port=int(os.environ.get("BLOG_DB_PORT", "5432")),
    user="blog",
    password="blog",
    dbname=os.environ.get("BLOG_DB_NAME", "blog"),
    connect_timeout=5,
)
with connection, connection.cursor() as cursor:
    cursor.execute("SELECT to_regclass('entries') IS NOT NULL")
    if cursor.fetchone()[0]:
        print("migrate: the tables are there already")
    else:
        with open("/app/schema.sql") as schema:
            cursor.execute(schema.read())
        cursor.execute(
            "INSERT INTO authors (email, name, hashed_password) VALUES (%s, %s, %s) RETURNING id",
            ("migration@example.org", "Migration", "-"),
        )
        author = cursor.fetchone()[0]
        cursor.execute(
            "INSERT INTO entries (author_id, slug, title, markdown, html, published, updated) "
            "VALUES (%s, 'welcome', 'Welcome, from the migration', 'hi', '<p>hi</p>', "
            "now(), now())",
            (author,),
        )
        print("migrate: created the tables and a first entry")
