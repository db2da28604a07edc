"""What generated users write about: topics, their words, and message templates (content only).

``{slot}`` in a template is filled from the current topic's words, else from ``SHARED``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    words: dict[str, tuple[str, ...]]


# fmt: off
SHARED: dict[str, tuple[str, ...]] = {
    "country": ("Australia", "Canada", "Peru", "Kenya", "Norway", "Vietnam", "Portugal", "Chile", "Egypt",
                "Mongolia", "Iceland", "Morocco", "Brazil", "Japan", "Poland", "Ghana", "Nepal", "Mexico"),
    "city": ("Lisbon", "Tokyo", "Mexico City", "Prague", "Marrakech", "Hanoi", "Reykjavik", "Cape Town",
             "Buenos Aires", "Vancouver", "Istanbul", "Seoul", "Berlin", "Nairobi", "Lima", "Melbourne"),
    "language": ("Spanish", "French", "German", "Japanese", "Italian", "Portuguese", "Korean", "Turkish"),
    "phrase": ("good morning", "where is the train station", "thank you very much", "I am allergic to nuts",
               "how much does this cost", "see you tomorrow", "happy birthday"),
    "n": ("2", "3", "4", "5", "6", "8", "10", "12"),
    "words": ("300", "500", "800", "1000", "1500"),
    "person": ("my boss", "my landlord", "a client", "my teacher", "my neighbour", "a recruiter", "my team"),
    "when": ("yesterday", "last week", "this morning", "a few days ago", "last month", "since Monday"),
    "feeling": ("confused", "stuck", "worried", "not sure", "a bit lost", "excited"),
    "alt": ("do it without the oven", "only have an hour", "use a cheaper option", "skip the first step",
            "do it on my phone", "start next month", "double it"),
}

TOPICS: tuple[Topic, ...] = (
    Topic("cooking", {
        "thing": ("risotto", "banana bread", "ramen", "lasagna", "sourdough", "chicken curry", "pancakes", "paella",
                  "hummus", "a vegan chili", "granola", "pad thai"),
        "task": ("make sourdough starter", "cook rice without it sticking", "keep herbs fresh",
                 "sharpen a kitchen knife", "make a roux", "poach an egg", "meal prep for a week", "caramelize onions"),
        "concept": ("the Maillard reaction", "yeast", "gluten", "umami", "emulsification"),
        "a": ("butter",), "b": ("olive oil",), "purpose": ("baking", "a weeknight dinner", "a dinner party"),
        "problem": ("it came out dry", "the dough did not rise", "it tasted bland", "it burned on the bottom"),
        "noun": ("oven", "recipe", "dough", "pan", "sauce", "flour", "stock", "spices"),
    }),
    Topic("travel", {
        "thing": ("a two-week trip to Japan", "a weekend in Lisbon", "a road trip in Chile", "a trek in Nepal",
                  "a rail pass in Europe", "a budget trip to Vietnam"),
        "task": ("find cheap flights", "pack carry-on only", "avoid jet lag", "get a tourist visa", "plan a road trip",
                 "rent a car abroad"),
        "concept": ("travel insurance", "the Schengen 90/180 rule", "dynamic pricing of flights", "jet lag"),
        "a": ("Airbnb", "a hostel", "the train"), "b": ("a hotel", "a guesthouse", "a rental car"),
        "purpose": ("a family of four", "a solo trip", "a honeymoon", "a short business trip"),
        "problem": ("my flight got cancelled", "my bag did not arrive", "the hotel lost my booking"),
        "noun": ("flight", "visa", "hotel", "itinerary", "budget", "passport", "luggage", "train"),
    }),
    Topic("programming", {
        "thing": ("a REST API", "a CSV parser", "a Telegram bot", "a todo app", "a web scraper", "a CLI tool"),
        "task": ("parse a CSV file in Python", "reverse a linked list", "connect to Postgres from Node",
                 "write unit tests for a Flask app", "read a JSON file in Go", "sort a dictionary by value",
                 "make an HTTP request in JavaScript", "center a div with CSS", "undo the last git commit"),
        "concept": ("recursion", "async and await", "database indexes", "Big O notation", "closures", "Docker volumes",
                    "dependency injection", "race conditions"),
        "a": ("Python", "PostgreSQL", "React", "REST"), "b": ("Go", "MongoDB", "Vue", "GraphQL"),
        "purpose": ("a small web backend", "a data pipeline", "a startup MVP", "a school project"),
        "problem": ("it throws a KeyError", "the tests hang", "it is very slow on big files", "the import fails",
                    "it works locally but not on the server"),
        "noun": ("function", "loop", "query", "module", "server", "list", "class", "endpoint", "test"),
    }),
    Topic("money", {
        "thing": ("an emergency fund", "a monthly budget", "index funds", "a Roth IRA", "a credit card", "a mortgage"),
        "task": ("build a monthly budget", "pay off credit card debt", "improve my credit score", "save for a house",
                 "start investing with little money", "split bills with roommates"),
        "concept": ("compound interest", "inflation", "dollar-cost averaging", "an index fund", "APR versus APY"),
        "a": ("renting", "a fixed-rate mortgage", "index funds"), "b": ("buying", "a variable rate", "real estate"),
        "purpose": ("someone in their twenties", "a family on one income", "a freelancer with irregular pay"),
        "problem": ("I keep overspending on food", "my savings are not growing", "I missed a payment"),
        "noun": ("savings", "salary", "rent", "debt", "interest", "account", "budget", "fees"),
    }),
    Topic("health", {
        "thing": ("a 10k run", "a beginner strength routine", "better sleep", "a high-protein diet", "stretching"),
        "task": ("start running as a beginner", "fall asleep faster", "fix my posture at the desk",
                 "drink more water", "recover after a long run", "build a home workout"),
        "concept": ("VO2 max", "intermittent fasting", "caffeine tolerance", "muscle soreness",
                    "resting heart rate"),
        "a": ("running", "yoga", "free weights"), "b": ("cycling", "pilates", "machines"),
        "purpose": ("losing weight", "back pain", "a busy parent", "someone over fifty"),
        "problem": ("my knee hurts after running", "I wake up at 3 am", "I feel tired all day"),
        "noun": ("workout", "sleep", "diet", "muscles", "routine", "knee", "protein", "steps"),
    }),
    Topic("languages", {
        "thing": ("Spanish verbs", "Japanese kanji", "French pronunciation", "German cases", "Italian phrases"),
        "task": ("learn Spanish in six months", "remember vocabulary", "practice speaking alone",
                 "understand native speakers", "learn the Korean alphabet"),
        "concept": ("the subjunctive", "German noun genders", "spaced repetition", "Japanese particles"),
        "a": ("Duolingo", "a private tutor"), "b": ("textbooks", "language exchange"),
        "purpose": ("a trip next summer", "moving abroad", "a job interview in French"),
        "problem": ("I forget words quickly", "I freeze when I speak", "I cannot hear the difference"),
        "noun": ("grammar", "vocabulary", "accent", "lesson", "verbs", "words", "tenses"),
    }),
    Topic("home", {
        "thing": ("tomatoes on a balcony", "a fiddle leaf fig", "a small vegetable garden", "a leaky faucet",
                  "a bathroom repaint", "a compost bin"),
        "task": ("fix a leaky faucet", "get rid of fruit flies", "grow tomatoes on a balcony", "unclog a drain",
                 "remove mould from a shower", "hang a heavy mirror"),
        "concept": ("composting", "heat pumps", "soil pH", "condensation on windows"),
        "a": ("a heat pump", "LED bulbs", "paint"), "b": ("a gas boiler", "halogen bulbs", "wallpaper"),
        "purpose": ("a small flat", "an old house", "a rented apartment"),
        "problem": ("the leaves turn yellow", "the tap still drips", "the paint is peeling"),
        "noun": ("plants", "wall", "garden", "sink", "soil", "window", "paint", "floor"),
    }),
    Topic("learning", {
        "thing": ("the French Revolution", "black holes", "the Roman Empire", "photosynthesis", "plate tectonics",
                  "vaccines", "quantum computing", "climate change", "the stock market crash of 1929"),
        "task": ("study for exams", "write a good essay introduction", "take better notes", "solve quadratic equations",
                 "read a scientific paper"),
        "concept": ("photosynthesis", "entropy", "natural selection", "supply and demand", "relativity",
                    "DNA replication", "the greenhouse effect", "the French Revolution"),
        "a": ("capitalism", "nuclear power", "the Greeks"), "b": ("socialism", "solar power", "the Romans"),
        "purpose": ("a high school essay", "a university exam", "a presentation"),
        "problem": ("I do not understand the textbook", "my essay is too long", "I keep mixing up the dates"),
        "noun": ("exam", "essay", "chapter", "theory", "history", "formula", "lecture", "notes"),
    }),
    Topic("work", {
        "thing": ("a cover letter", "a job interview", "a salary negotiation", "my resume", "a performance review",
                  "a LinkedIn summary"),
        "task": ("ask for a raise", "prepare for a job interview", "write a cover letter", "say no to extra work",
                 "run a better meeting", "switch careers into tech"),
        "concept": ("OKRs", "the STAR interview method", "imposter syndrome", "agile", "notice periods"),
        "a": ("a startup", "freelancing", "remote work"), "b": ("a big company", "a full-time job", "the office"),
        "purpose": ("a junior developer", "a career changer", "a new manager"),
        "problem": ("my manager ignores my emails", "I got no replies to my applications", "the meeting went badly"),
        "noun": ("manager", "job", "resume", "interview", "team", "deadline", "project", "email"),
    }),
)

# Short messages people send a chat bot: greetings, thanks, one-word checks.
SHORT: tuple[str, ...] = (
    "hi", "hello", "hey", "good morning!", "thanks", "thank you!", "ok", "cool", "hello?", "are you there?",
    "lol", "nice", "yes", "no", "hmm", "what can you do?", "who are you?",
)

# Self-contained one-line facts (the classifier's simple).
FACTS: tuple[str, ...] = (
    "What is the capital of {country}?", "What's the population of {city}?", "What time zone is {city} in?",
    "Translate '{phrase}' into {language}", "What does {concept} mean?", "Who discovered {concept}?",
    "Is {thing} hard?", "What is {concept}?", "How old is {city}?", "What currency does {country} use?",
    "Best time to visit {country}?", "Define {concept}.",
)

# Ordinary requests (the classifier's medium).
MEDIUM: tuple[str, ...] = (
    "How do I {task}?", "Explain {concept} in simple terms.", "What should I know before I {task}?",
    "Give me tips for {thing}.", "What's the best way to {task}?", "Can you recommend a good approach to {thing}?",
    "Suggest a plan for {thing} for {purpose}.", "Why does {problem} happen?", "How to {task}",
    "Write a short message to {person} about {thing}.", "What are common mistakes with {thing}?",
    "Summarize {concept} in three sentences.", "Describe {concept} for {purpose}.",
)

# Requests that need reasoning or long output (the classifier's complex).
COMPLEX: tuple[str, ...] = (
    "Compare {a} and {b} for {purpose}, with pros and cons.", "Write a {words}-word essay about {concept}.",
    "Walk me through how to {task}, step by step.", "Create a {n}-week plan for {thing} for {purpose}.",
    "Analyze the trade-offs of {a} versus {b} and evaluate the risks for {purpose}.",
    "Design a {n}-month study plan to master {concept}, and explain why each step matters.",
    "Explain why {problem} happens, what the implications are, and how to debug it step by step.",
    "Write a short story about {thing} set in {city}.",
)

# The background people add around a question.
DETAILS: tuple[str, ...] = (
    "I have been trying to {task} since {when} and I am {feeling}.", "For context, this is for {purpose}.",
    "My {noun} situation is a bit unusual.", "I already read a few articles about {concept} but they disagree.",
    "{person} told me something different {when}.", "I live in {city}, if that matters.",
    "The problem is that {problem}.", "I only have about {n} hours a week for this.",
    "I tried it {when} and {problem}.", "Keep in mind I am a beginner with {noun} stuff.",
    "It needs to work for {purpose}.", "Money is tight, so cheaper is better.",
    "I would rather not spend more than {n} weeks on it.",
)

FOLLOW_UPS: tuple[str, ...] = (
    "why?", "thanks!", "thank you", "ok", "can you give an example?", "make it shorter", "more details please",
    "what about {city}?", "and in {language}?", "how long does that take?", "is that safe?", "that didn't work",
    "can you explain the second point?", "ok and what if I {alt}?", "perfect, thanks", "could you list the steps?",
    "what's the difference?", "are you sure?", "and the {noun}?", "can you say that more simply?", "go on",
)

LONG_FOLLOW_UPS: tuple[str, ...] = (
    "I tried that but {problem}. What should I do now?", "That helps. How would this change for {purpose}?",
    "Okay, but my {noun} is different from the usual case. Does your answer still hold?",
    "Can you rewrite that for {person}, a bit more formal?", "What if I {alt}? Would the steps change?",
)

PASTE_ASKS: tuple[str, ...] = (
    "Summarize this article for me:", "Can you proofread this and fix the grammar?",
    "Make this shorter and clearer:", "What are the main points of this text?",
    "Translate this into {language}:", "Rewrite this email so it sounds more polite:",
)

PROSE: tuple[str, ...] = (
    "The {noun} has been a topic of debate for years, and {concept} is often mentioned in that context.",
    "According to several reports, {thing} became more popular after {when}.",
    "Many people in {city} say that {problem}, which makes planning difficult.",
    "{person} suggested that we review the {noun} before the next meeting.",
    "In the end, the decision depends on the budget, the time available and the risks involved.",
    "Critics argue that {a} is overrated, while supporters point to its long track record.",
    "The second part of the plan covers {thing} and the costs of {task}.",
    "It is worth noting that the numbers changed a lot between the first and the last quarter.",
)

CODE_ASKS: tuple[str, ...] = (
    "Why does this code fail?", "Can you refactor this to be faster?", "Find the bug in this:",
    "Explain what this code does:", "Add error handling to this function:",
)

CODE_LINES: tuple[str, ...] = (
    "def load_{noun}(path):", "with open(path) as f:", "rows = [line.split(',') for line in f]",
    "for row in rows:", "if not row:", "continue", "total += int(row[2])", "return total",
    "result = requests.get(url, timeout=10)", "data = result.json()", "items = sorted(data, key=len)",
    "print(f'done: ' + str(len(items)))", "except KeyError as error:", "raise ValueError('bad {noun}')",
    "class {noun}Store:", "self.cache = dict()", "import json", "import os", "# TODO: {problem}",
)

# Questions many people ask, each in its usual form (ranked: the first is asked most).
COMMON: tuple[str, ...] = (
    "Tell me a joke", "What can you do?", "What is the meaning of life?", "How do I boil an egg?",
    "What is the capital of Australia?", "How many ounces are in a cup?", "What is machine learning?",
    "How many calories should I eat a day?", "Write a haiku about the sea", "What is the speed of light?",
    "How do I lose weight?", "What is Bitcoin?", "How to make pancakes?", "Who are you?",
    "How do I center a div?", "What is the difference between weather and climate?", "How do vaccines work?",
    "What is the tallest mountain in the world?", "How many hours of sleep do I need?", "What is an API?",
    "How do I make cold brew coffee?", "What is inflation?", "Give me a motivational quote",
    "How many bones are in the human body?", "What is photosynthesis?", "Recommend a good book",
    "How do I write a cover letter?", "What is the best programming language to learn first?",
    "What is a black hole?", "How long should I boil pasta?", "What is compound interest?",
    "Who painted the Mona Lisa?", "How far is the moon from Earth?", "What is the largest ocean?",
    "How do I improve my English?", "Suggest a name for my cat", "What is Python used for?",
    "How do I reverse a string in Python?", "What is the boiling point of water?", "How does the internet work?",
    "What is blockchain?", "How do I start running?", "What is the population of the world?",
    "What should I cook for dinner?", "How do I meditate?", "What is a good gift for my mom?",
    "What is the fastest animal?", "How do I convert Celsius to Fahrenheit?", "What is GDP?",
    "How do I get rid of hiccups?", "What is the smallest country in the world?", "How many continents are there?",
    "What is an index fund?", "How do I learn to code?", "What is a prime number?", "How does a credit score work?",
    "What is the difference between a virus and bacteria?", "How much water should I drink a day?",
    "What is the longest river in the world?", "How do I make a resume?", "What is artificial intelligence?",
    "How do airplanes fly?", "What is the capital of Canada?", "How do I tie a tie?", "What is SQL?",
    "What is the theory of relativity?", "How do I deal with stress?", "What is a VPN?",
    "How do I make bread at home?", "What is the Pythagorean theorem?", "Who was the first person on the moon?",
    "What is the difference between affect and effect?", "How do I save money?", "What is a leap year?",
    "How many teaspoons are in a tablespoon?", "What is the hardest language to learn?", "What is DNA?",
    "How do I fix a slow computer?", "What is the best way to learn Spanish?", "What is the Big Bang?",
    "How do I write a good essay?", "What is cloud computing?", "What is the capital of Japan?",
    "What is a good morning routine?", "How do solar panels work?", "What is the stock market?",
    "Why is the sky blue?", "How do I make an omelette?", "What is Git?", "How many planets are there?",
    "What is the best diet?", "How do I clean a cast iron pan?", "What is a mortgage?",
    "How do I ask for a raise?", "What is quantum computing?", "How to be more productive?",
    "What is the difference between RAM and storage?", "How do I grow tomatoes?", "What is mindfulness?",
    "What is the capital of Brazil?", "How do I stop procrastinating?", "What is JavaScript?",
    "How many miles is a marathon?", "What is a haiku?", "How do I make friends as an adult?",
    "What is climate change?", "How do I prepare for a job interview?", "What is the fibonacci sequence?",
    "How do I sleep better?", "What is a 401k?", "How do magnets work?", "What is the largest animal?",
    "Write a short poem about love", "How do I make guacamole?", "What is an algorithm?",
    "How do I calculate a percentage?", "What is the best exercise for back pain?", "What are carbs?",
    "How do I learn guitar?", "What is the capital of Germany?", "Why do cats purr?",
    "What is Docker?", "How do I make a budget?", "What is the meaning of my name?", "How do rainbows form?",
    "What is the difference between a crocodile and an alligator?", "How do I remove a stain from a shirt?",
    "What is a neural network?", "How do I write an email to my professor?", "What is the speed of sound?",
    "How much protein do I need?", "What is the best time to visit Japan?", "Explain the water cycle",
    "How do I change a tire?", "What is Linux?", "What is the capital of France?", "How do bees make honey?",
    "What is a recession?", "How do I get better at chess?", "What is the circumference of the Earth?",
    "How long does it take to learn Japanese?", "What is the difference between HTTP and HTTPS?",
    "Give me a fun fact", "What should I name my dog?", "How do I make tea?",
)
# fmt: on
