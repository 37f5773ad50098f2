"""A built-in corpus of simple generated stories, so the first `mlxstory train` works with no network.

Written from scratch in the TinyStories spirit: a named hero, a friend and a grown-up, a place, a
favourite thing, a small problem, some dialogue and a happy resolution. Ten story arcs, each with
several wordings per beat, and word lists that multiply into hundreds of thousands of distinct
sentences, so a model trained on it has to learn the patterns instead of memorising a few stories.
Deterministic: the same (count, seed) always gives the same list.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_COUNT = 10_000
DEFAULT_SEED = 0

GIRLS = ["Lily", "Mia", "Sue", "Anna", "Emma", "Lucy", "Zoe", "Ella", "Rosa", "Amy", "Kim", "Maya", "Nora",
         "Ruby", "Sara", "Jane", "Molly", "Daisy", "Ivy", "Lena", "Hannah", "Grace", "Tina", "Pam", "Clara",
         "Alice", "Julia", "Olivia", "Sophie", "Chloe", "Hazel", "Violet", "Stella", "Luna", "Iris", "Elsie",
         "Poppy", "Wendy", "Nina", "Fiona", "Greta", "Heidi", "Irene", "Joy", "Kate", "Laura", "Megan",
         "Nadia", "Penny", "Rita", "Sally", "Tessa", "Uma", "Vera", "Willow", "Yara", "Beth", "Dora"]
BOYS = ["Tom", "Ben", "Sam", "Max", "Leo", "Jack", "Tim", "Finn", "Joe", "Bob", "Dan", "Alex", "Eli", "Noah",
        "Owen", "Luke", "Ned", "Ray", "Theo", "Jake", "Adam", "Paul", "Ted", "Carl", "Oliver", "Henry",
        "Oscar", "Felix", "Hugo", "Arthur", "Simon", "Peter", "Victor", "Walter", "Gus", "Hank", "Ivan",
        "Jonah", "Kevin", "Liam", "Mason", "Nick", "Otto", "Rudy", "Seth", "Toby", "Wade", "Zack", "Billy",
        "Charlie", "David", "Ethan", "Frank", "George", "Harry", "Isaac", "Jimmy", "Marco"]
PET_NAMES = ["Spot", "Pip", "Coco", "Fluffy", "Bubbles", "Rex", "Milo", "Bella", "Sunny", "Buddy", "Daisy",
             "Patch", "Tiny", "Ginger", "Lucky", "Oscar", "Rosie", "Peanut", "Biscuit", "Pepper", "Muffin",
             "Socks", "Shadow", "Twinkle", "Button", "Noodle", "Pebble", "Maple", "Honey", "Cookie", "Sparky",
             "Whiskers", "Snowball", "Pickles", "Bingo", "Ziggy", "Waffles", "Dot", "Scout", "Hopper"]
# Invented names ("Bimo", "Talu") multiply the names a story can have, as TinyStories' own names do.
NAME_SOUNDS = ["Ba", "Bi", "Bo", "Da", "Di", "Fa", "Fi", "Go", "Ka", "Ki", "Lo", "Lu", "Ma", "Mi", "Mo", "Na",
               "Ni", "Pa", "Po", "Ra", "Ri", "Sa", "Ta", "Ti", "To", "Wu", "Ya", "Zo"]
NAME_ENDINGS = ["", "", "n", "ly", "bo", "mo", "ra", "ki", "lu", "to"]
ANIMALS = ["cat", "dog", "bunny", "bird", "bear", "duck", "fox", "frog", "mouse", "puppy", "kitten",
           "squirrel", "pig", "lamb", "owl", "turtle", "goat", "cow", "horse", "chick", "deer", "hedgehog",
           "raccoon", "beaver", "panda", "monkey", "parrot", "goose", "hen", "snail", "ladybug", "penguin",
           "koala", "lion", "tiger", "zebra", "elephant", "giraffe", "dolphin", "seal"]
TRAITS = ["little", "happy", "kind", "curious", "brave", "shy", "playful", "cheerful", "clever", "gentle",
          "small", "friendly", "busy", "silly", "quiet", "funny", "helpful", "sleepy", "smart", "polite",
          "honest", "careful", "lively", "caring", "jolly", "patient", "bold", "sweet", "tiny", "young"]
ACTIVITIES = ["play in the sand", "sing songs", "run in the grass", "look at the stars", "draw pictures",
              "jump in puddles", "read books", "build towers with blocks", "pick flowers",
              "climb small trees", "dance in the sun", "play hide and seek", "ride a red bike",
              "splash in the water", "watch the clouds", "chase butterflies", "bake cookies",
              "count the birds", "paint with bright colors", "play tag", "collect pretty leaves",
              "make mud pies", "listen to stories", "skip along the path", "hum little tunes",
              "feed the ducks", "roll down the hill", "blow bubbles", "look for bugs", "plant seeds",
              "play the piano", "fold paper boats", "throw pebbles into the pond", "swing very high",
              "spin in circles", "whistle with a blade of grass", "wear funny hats", "tell jokes",
              "help in the kitchen", "water the plants", "build sandcastles", "hop like a frog"]
COLORS = ["red", "blue", "yellow", "green", "pink", "purple", "orange", "white", "brown", "gold", "silver",
          "black", "gray"]
LOOKS = ["shiny", "soft", "big", "little", "new", "old", "striped", "spotted", "fuzzy", "round", "tiny",
         "sparkly", "bumpy", "smooth", "special", "pretty", "wooden", "squeaky", *COLORS]
TOYS = ["ball", "kite", "doll", "teddy bear", "toy car", "hat", "boat", "drum", "book", "stone", "ribbon",
        "balloon", "truck", "train", "whistle", "blanket", "box of crayons", "toy robot", "scarf", "shell",
        "puzzle", "yo-yo", "spinning top", "toy plane", "jump rope", "marble", "flute", "wagon", "bucket",
        "shovel", "umbrella", "backpack", "bracelet", "puppet", "toy horse", "paintbrush", "lunchbox",
        "rubber duck", "toy dinosaur", "pinwheel", "bell", "map", "mitten", "crown", "feather"]
BREAKABLE = ["doll", "toy car", "boat", "drum", "truck", "train", "whistle", "toy robot", "kite", "cup",
             "toy plane", "wagon", "flute", "puppet", "toy horse", "pinwheel", "lunchbox", "crown", "bowl",
             "music box", "clock", "spinning top", "toy dinosaur", "umbrella", "sand castle"]
THROWABLE = ["ball", "kite", "hat", "balloon", "teddy bear", "doll", "scarf", "ribbon", "shoe", "frisbee",
             "mitten", "feather", "toy plane", "puppet", "rubber duck", "bracelet", "sock", "paper plane"]
PLACES = {
    "park": ["under the slide", "behind the swings", "near the big tree", "in the sandbox", "under a bench"],
    "garden": ["under a bush", "between the flowers", "behind the watering can", "near the tall sunflowers",
               "by the little gate"],
    "forest": ["behind a big rock", "inside a hollow log", "under a pile of leaves", "next to an old tree",
               "near a little stream"],
    "beach": ["behind a sand castle", "under a big towel", "next to a pile of shells", "near the rocks",
              "in a little pool of water"],
    "farm": ["in the hay", "behind the red barn", "next to the pig pen", "under the old cart",
             "near the pond"],
    "backyard": ["under the porch", "behind the shed", "in the tall grass", "next to the fence",
                 "under the swing"],
    "meadow": ["in the tall grass", "behind a hill", "near a patch of daisies", "under a bush",
               "by a little pond"],
    "playground": ["under the slide", "near the seesaw", "behind the climbing frame", "in the sand",
                   "next to the gate"],
    "lake": ["by the wooden dock", "under a willow tree", "near the reeds", "behind a boat",
             "on a flat rock"],
    "zoo": ["near the monkey house", "behind a big sign", "by the duck pond", "under a bench",
            "next to the ice cream stand"],
    "hill": ["behind a big rock", "under a lonely tree", "in the long grass", "near the old fence",
             "by a patch of clover"],
    "village": ["by the well", "behind the bakery", "under the bridge", "near the market", "by the church"],
    "orchard": ["under an apple tree", "behind a basket", "in the grass", "near the ladder",
                "between two pear trees"],
    "river": ["under the bridge", "behind the tall reeds", "on a mossy rock", "near the stepping stones",
              "by the old mill"],
    "school": ["under a desk", "behind the bookshelf", "in the sandbox", "near the big window",
               "by the coat hooks"],
    "library": ["behind a tall shelf", "under a reading chair", "near the picture books", "by the window",
                "next to the globe"],
}
# (role, pronoun, how the story names them): "his mom" ... "Mom said"; "her aunt" ... "Aunt Rosa said".
GROWNUPS = [("mom", "she", "Mom"), ("dad", "he", "Dad"), ("grandma", "she", "Grandma"),
            ("grandpa", "he", "Grandpa"), ("aunt", "she", "Aunt {girl}"), ("uncle", "he", "Uncle {boy}"),
            ("teacher", "she", "Miss {girl}"), ("neighbor", "he", "Mr. {family}"),
            ("neighbor", "she", "Mrs. {family}")]
FAMILY_NAMES = ["Brown", "Green", "Hill", "Wood", "Bell", "Gray", "Stone", "Baker", "Fisher", "Rose"]
WEATHER = ["sunny", "warm", "bright", "windy", "cool", "lovely", "clear", "cloudy", "crisp", "breezy",
           "golden", "quiet", "snowy", "foggy", "hot"]
TIMES = ["One day", "One sunny day", "One morning", "One afternoon", "One bright morning", "Later that day",
         "One warm day", "On a windy day", "One Saturday", "One Sunday morning", "The next day",
         "One summer day", "One winter morning", "One spring day", "One autumn afternoon", "After lunch",
         "Early one morning", "One evening"]
FEELINGS_GOOD = ["happy", "glad", "proud", "excited", "thankful", "cheerful", "calm", "joyful", "warm inside"]
FEELINGS_BAD = ["sad", "upset", "worried", "scared", "unhappy", "grumpy", "lonely", "nervous", "gloomy"]
SNACKS = ["cookies", "apples", "sandwiches", "cake", "grapes", "warm bread", "juice", "cheese", "muffins",
          "pancakes", "berries", "carrots", "pie", "soup", "crackers", "lemonade", "popcorn", "bananas",
          "cupcakes", "honey toast"]
TREATS = ["a hug", "a big smile", "a cookie", "a warm cup of milk", "a kiss on the head", "a shiny sticker",
          "a flower", "half of a sandwich", "a high five", "a drawing"]


@dataclass(frozen=True)
class Character:
    """A named character and the pronouns the sentences need."""

    name: str
    kind: str
    he: str

    @property
    def him(self) -> str:
        return {"he": "him", "she": "her"}[self.he]

    @property
    def his(self) -> str:
        return {"he": "his", "she": "her"}[self.he]

    @property
    def He(self) -> str:  # noqa: N802  the capitalised pronoun reads best in templates
        return self.he.capitalize()

    @property
    def His(self) -> str:  # noqa: N802
        return self.his.capitalize()


def a(word: str) -> str:
    """The word with its indefinite article."""
    return ("an " if word[0] in "aeiou" or word.startswith("hon") else "a ") + word


class _Teller:
    """Builds one story from a seeded `random.Random`; every choice goes through `self.r`."""

    def __init__(self, r: random.Random) -> None:
        self.r = r
        self.c = r.choice
        self.hero = self._character()
        friend = self._character()
        while friend.name == self.hero.name:
            friend = self._character()
        self.friend = friend
        self.grownup, grownup_he, title = self.c(GROWNUPS)
        title = title.format(girl=self.c(GIRLS), boy=self.c(BOYS), family=self.c(FAMILY_NAMES))
        self.adult = Character(title, self.grownup, grownup_he)
        self.place = self.c(list(PLACES))
        self.spots = r.sample(PLACES[self.place], 3)
        self.toy = self.c(TOYS)
        self.color = self.c(LOOKS)
        self.friend_known = True  # False when the story is about meeting the friend

    def _character(self) -> Character:
        roll = self.r.random()
        if roll < 0.4:
            return Character(self.c(GIRLS), "girl", "she")
        if roll < 0.8:
            return Character(self.c(BOYS), "boy", "he")
        name = self.c(PET_NAMES) if self.r.random() < 0.5 else self._invented_name()
        return Character(name, self.c(ANIMALS), self.c(["he", "she"]))

    def _invented_name(self) -> str:
        return self.c(NAME_SOUNDS) + self.c(NAME_SOUNDS).lower() + self.c(NAME_ENDINGS)

    def say(self, who: Character, line: str, verb: str = "said") -> str:
        """Dialogue with the speaker before or after the line, as children's stories do."""
        if verb == "asked" and not line.endswith("?"):
            verb = "said"
        if self.r.random() < 0.5:
            quoted = line[:-1] + "," if line.endswith(".") else line
            return f'"{quoted}" {who.name} {verb}.'
        return f'{who.name} {verb}, "{line}"'

    def opening(self) -> str:
        h, trait = self.hero, self.c(TRAITS)
        return self.c([
            f"Once upon a time, there was {a(trait)} {h.kind} named {h.name}.",
            f"Once upon a time, in a small house near a {self.place}, there lived {a(trait)} {h.kind} "
            f"named {h.name}.",
            f"There was once {a(trait)} {h.kind} called {h.name}.",
            f"{h.name} was {a(trait)} {h.kind} who lived near a big {self.place}.",
            f"Once there was {a(trait)} {h.kind}. {h.His} name was {h.name}.",
        ])

    def likes(self) -> str:
        h = self.hero
        return self.c([
            f"{h.He} loved to {self.c(ACTIVITIES)}.",
            "{} liked to {} and {}.".format(h.He, *self.r.sample(ACTIVITIES, 2)),
            f"{h.His} favorite toy was {a(self.color)} {self.toy}.",
            f"{h.He} had {a(self.color)} {self.toy} that {h.he} took everywhere.",
            f"Every day, {h.he} liked to {self.c(ACTIVITIES)} with {h.his} friend {self.friend.name}."
            if self.friend_known else f"{h.He} liked to {self.c(ACTIVITIES)} every day.",
        ])

    def outing(self) -> str:
        h, f = self.hero, self.friend
        return self.c([
            f"{self.c(TIMES)}, {h.name} went to the {self.place} with {h.his} {self.grownup}.",
            f"{self.c(TIMES)}, {h.name} and {f.name} went to play at the {self.place}."
            if self.friend_known else f"{self.c(TIMES)}, {h.name} walked to the {self.place}.",
            f"It was {a(self.c(WEATHER))} day, so {h.name} went to the {self.place} to play.",
            f"{self.c(TIMES)}, {h.name} took {h.his} {self.toy} to the {self.place}.",
        ])

    def ending(self, truth: str, habit: str, story: str) -> str:
        h, f = self.hero, self.friend
        if f.name not in story:  # no playing until sundown with someone the story never mentioned
            f = Character(f"{h.his} {self.grownup}", self.grownup, self.adult.he)
        return self.c([
            f"From that day on, {habit}.",
            f"{h.name} learned that {truth}.",
            f"{h.name} learned that {truth}. From that day on, {habit}.",
            f"{h.name} and {f.name} played until the sun went down. It was the best day ever.",
            f"{h.name} and {f.name} went home together. It had been a good day.",
            f"That night, {h.name} went to bed with a big smile. {h.He} felt {self.c(FEELINGS_GOOD)}.",
            f"{h.name} smiled. {truth[0].upper() + truth[1:]}.",
        ])

    # Each arc returns the story's middle as paragraphs; `tell` adds the opening and the ending.
    def lost(self) -> tuple[list[str], str, str]:
        h, f, toy = self.hero, self.friend, self.toy
        s1, s2, s3 = self.spots
        problem = self.c([
            f"{h.name} put {h.his} {toy} down to {self.c(ACTIVITIES)}. When {h.he} came back, it was gone!",
            f"While {h.he} played, {h.name} lost {h.his} {self.color} {toy}.",
            f"The wind blew hard, and {h.his} {toy} was gone.",
        ])
        cry = self.say(h, self.c([f"Oh no! Where is my {toy}?", f"I can't find my {toy}!",
                                  f"My {toy} is lost!"]), self.c(["cried", "said", "shouted"]))
        help_ = self.say(f, self.c(["Don't worry, I will help you look.", "Let's look together.",
                                    "We will find it. I know we will."]))
        search = self.c([
            f"They looked {s1}. They looked {s2}. But the {toy} was not there.",
            f"First they looked {s1}, then {s2}. {h.name} felt {self.c(FEELINGS_BAD)}.",
            f"They searched {s1} and {s2}, but they could not find it.",
        ])
        found = self.c([
            f"At last, {f.name} saw something {self.color if self.color in COLORS else 'small'} {s3}. "
            f"It was the {toy}!",
            f"Then {h.name} saw a little tail. {a(self.c(ANIMALS)).capitalize()} was sitting {s3} "
            f"with the {toy}!",
            f"Just then, {f.name} pointed at something {s3}. \"Look! There it is!\" {f.he} shouted.",
        ])
        thanks = self.say(h, self.c([f"Thank you, {f.name}! You are a good friend.",
                                     "Thank you for helping me!", "I am so happy we found it!"]))
        hug = f"{h.name} hugged {h.his} {toy} and gave {f.name} {self.c(TREATS)}." if self.r.random() < 0.5 \
            else f"{h.name} held the {toy} tight."
        truth = self.c(["friends help each other", "it is good to never give up",
                        "it helps to look carefully"])
        habit = f"{h.name} always kept {h.his} {toy} close"
        return [f"{problem} {cry}", f"{help_} {search}", f"{found} {hug} {thanks}"], truth, habit

    def stuck(self) -> tuple[list[str], str, str]:
        h, f, toy, ad = self.hero, self.friend, self.toy, self.adult
        high = self.c(["up in a tall tree", "on the roof of the shed", "on top of a high fence",
                       "on a high branch", "on top of a tall wall"])
        problem = self.c([
            f"{h.name} threw {h.his} {toy} up high. It landed {high}!",
            f"The wind took {h.his} {toy} and it got stuck {high}.",
        ])
        try1 = self.c([
            f"{h.He} jumped and jumped, but {h.he} was too small to reach it.",
            f"{h.He} tried to climb, but it was too high.",
            f"{h.He} stood on {h.his} toes, but {h.he} could not reach.",
        ])
        sad = self.say(h, self.c([f"I want my {toy} back!", "What can I do?", "It is too high for me."]))
        idea = self.c([
            f"{f.name} had an idea. {f.He} found a long stick and gave it to {h.name}.",
            f"{h.His} {ad.kind} came and saw the {toy}. {ad.He} got a ladder.",
            f"{f.name} said, \"Let me stand on this box and help you.\"",
        ])
        fix = self.c([
            f"With a little push, the {toy} fell down into {h.his} hands.",
            f"They worked together, and soon the {toy} was down.",
            f"Bit by bit, they got the {toy} down.",
        ])
        joy = self.say(h, self.c(["We did it!", "Hooray! Thank you!", "Now we can play again!"]),
                       self.c(["said", "shouted", "laughed"]))
        truth = self.c(["two friends working together can do big things", "it is good to ask for help"])
        habit = f"{h.name} played with {h.his} {toy} close to the ground"
        return [f"{problem} {try1} {sad}", f"{idea} {fix}", joy], truth, habit

    def broken(self) -> tuple[list[str], str, str]:
        h, toy, ad = self.hero, self.toy, self.adult
        oops = self.c([
            f"{h.name} played with {h.his} {toy} too hard, and it broke.",
            f"{h.name} dropped {h.his} {toy} on the ground. Now it was broken!",
            f"{h.name} stepped on {h.his} {toy} by mistake. Crack!",
        ])
        tears = self.say(h, self.c([f"My {toy} is broken!", "Oh no! What did I do?", "Now I can't play."]),
                         self.c(["cried", "said", "sobbed"]))
        comfort = self.c([
            f"{h.His} {ad.kind} came over and gave {h.him} a hug.",
            f"{h.His} {ad.kind} heard {h.him} and came to see.",
            f"{self.friend.name} sat next to {h.him}.",
        ])
        plan = self.say(ad, self.c(["Don't be sad. We can fix it together.", "Let's see what we can do.",
                                    "I have some glue. Maybe it will help."]))
        fixing = self.c([
            f"They used glue and a little tape. Soon the {toy} looked almost new.",
            f"They worked slowly and carefully until the {toy} was fixed.",
            f"It took a long time, but they fixed the {toy}.",
        ])
        truth = self.c(["broken things can often be fixed",
                        "it is important to be gentle with the things you love"])
        habit = f"{h.name} was careful with {h.his} toys"
        return [f"{oops} {tears}", f"{comfort} {plan}", fixing], truth, habit

    def share(self) -> tuple[list[str], str, str]:
        h, f, toy, ad = self.hero, self.friend, self.toy, self.adult
        want = self.c([
            f"{f.name} saw the {toy} and wanted to play with it too.",
            f"{f.name} came to play. {f.He} really liked {h.name}'s {toy}.",
        ])
        fight = self.c([
            self.say(h, f"No! It is my {toy}!") + " " + self.say(f, "But I want a turn!"),
            f"They both pulled on the {toy}. {self.say(h, 'Mine!', 'shouted')}",
        ])
        adult = self.c([
            f"{h.His} {ad.kind} heard the noise and came to see.",
            f"Then {h.his} {ad.kind} walked over.",
        ])
        advice = self.say(ad, self.c(["Why don't you take turns?", "Sharing is more fun than fighting.",
                                      "You can play with it together."]))
        result = self.c([
            f"{h.name} thought about it. Then {h.he} gave the {toy} to {f.name}.",
            f"So they took turns. First {h.name} played, then {f.name}.",
            f"{h.name} and {f.name} played with the {toy} together.",
        ])
        fun = self.c(["It was much more fun that way.", "They laughed and laughed.",
                      f"Soon they were both {self.c(FEELINGS_GOOD)}."])
        truth = self.c(["sharing makes playing more fun", "friends take turns"])
        habit = f"{h.name} and {f.name} always shared their toys"
        return [f"{want} {fight}", f"{adult} {advice}", f"{result} {fun}"], truth, habit

    def scared(self) -> tuple[list[str], str, str]:
        h, ad = self.hero, self.adult
        noise = self.c(["a strange noise", "a loud bump", "a soft scratch", "a funny sound"])
        culprit = self.c(["a little kitten", "the wind in the trees", "a branch on the window",
                          "a small mouse", "the old clock", "a puppy playing with a ball"])
        night = self.c([f"That night, {h.name} heard {noise} outside.",
                        f"When it got dark, {h.name} heard {noise}.",
                        f"In the evening, {h.name} heard {noise} at the {self.place}."])
        fear = self.say(h, self.c(["Who is there?", "I am scared!", "What was that?"]),
                        self.c(["whispered", "said", "asked"]))
        brave = self.c([f"{h.His} {ad.kind} took {h.his} hand.",
                        f"{h.name} took a deep breath and was brave.",
                        f"{h.name} got a flashlight and went to look."])
        reveal = self.c([f"It was only {culprit}!", f"They found out it was just {culprit}."])
        laugh = self.say(ad if self.r.random() < 0.5 else h,
                         self.c(["There is nothing to be scared of.", "It was just a little thing!",
                                 "Now we can sleep."]), self.c(["said", "laughed"]))
        truth = self.c(["things are not so scary when you look at them", "being brave can be easy"])
        habit = f"{h.name} was not afraid of the dark"
        return [f"{night} {fear}", f"{brave} {reveal} {laugh}"], truth, habit

    def rain(self) -> tuple[list[str], str, str]:
        h, f, ad = self.hero, self.friend, self.adult
        plan = self.c([f"{h.name} and {f.name} wanted to have a picnic with {self.c(SNACKS)}.",
                       f"{h.name} wanted to go to the {self.place} to {self.c(ACTIVITIES)}."])
        storm = self.c(["But then dark clouds came, and it began to rain.",
                        "Suddenly, big drops of rain fell from the sky.",
                        "But soon the sky turned gray and it started to rain."])
        gloomy = self.say(h, self.c(["Now we can't go out.", "I don't like the rain.", "Our day is ruined!"]))
        indoor = self.c(["build a big fort with blankets", "paint pictures of the sun",
                         f"bake {self.c(SNACKS)}", "play a game with cards", "make a puppet show"])
        idea = self.say(ad, f"Let's {indoor}!")
        after = self.c(["When the rain stopped, they saw a big rainbow in the sky.",
                        "They had so much fun that they forgot about the rain.",
                        "Later, the sun came out, and they went outside to jump in the puddles."])
        truth = self.c(["a rainy day can be a fun day too", "there is always something fun to do"])
        habit = f"{h.name} did not mind the rain"
        return [f"{plan} {storm} {gloomy}", f"{h.His} {ad.kind} smiled. {idea}", after], truth, habit

    def new_friend(self) -> tuple[list[str], str, str]:
        h, f = self.hero, self.friend
        alone = self.c([f"At the {self.place}, {h.name} saw {a(f.kind)} sitting all alone.",
                        f"{h.name} saw {a(f.kind)} {self.spots[0]}. {f.He} looked {self.c(FEELINGS_BAD)}."])
        hello = self.say(h, self.c(["Hi! Do you want to play with me?", "Hello! What is your name?",
                                    "Why are you alone?"]))
        answer = self.say(f, self.c([f"My name is {f.name}. I have no one to play with.",
                                     f"I am {f.name}. I am new here.", "Yes, please! I would like that."]))
        play = self.c([f"So they played with {h.name}'s {self.toy} all afternoon.",
                       f"They ran and laughed and played {self.spots[1]}.",
                       f"{h.name} showed {f.name} how to {self.c(ACTIVITIES)}."])
        truth = self.c(["a kind word can make a new friend", "it is good to be kind to someone who is alone"])
        habit = f"{h.name} and {f.name} were best friends"
        return [alone, f"{hello} {answer}", play], truth, habit

    def hurt_animal(self) -> tuple[list[str], str, str]:
        h, ad = self.hero, self.adult
        critter = self.c(["bird", "duck", "kitten", "bunny", "puppy", "squirrel"])
        trouble = self.c(["hurt its leg", "hurt its wing", "lost its mom", "got wet"])
        find = self.c([f"{self.c(TIMES)}, {h.name} found a little {critter} {self.spots[0]}.",
                       f"At the {self.place}, {h.name} saw a tiny {critter} {self.spots[0]}."])
        seen = f"The {critter} had {trouble}." if trouble != "got wet" else f"The {critter} was wet and cold."
        ask = self.say(h, self.c([f"Can we help the {critter}?", f"Poor little {critter}!",
                                  f"{ad.name}, look! It needs help."]))
        care = self.c([f"{h.His} {ad.kind} helped {h.him} make a soft bed in a box.",
                       f"{h.name} gave the {critter} some water and kept it warm.",
                       f"{h.name} and {h.his} {ad.kind} took care of the {critter} for many days."])
        better = self.c([f"Soon the {critter} was well again, and it went back home.",
                         f"One morning, the {critter} was strong again. It said goodbye in its own way.",
                         f"Then the {critter}'s mom came, and they were together again."])
        feel = f"{h.name} felt {self.c(FEELINGS_GOOD)}."
        truth = self.c(["it is good to help those who are small", "kindness makes the world better"])
        habit = f"{h.name} was kind to every animal"
        return [f"{find} {seen} {ask}", care, f"{better} {feel}"], truth, habit

    def learning(self) -> tuple[list[str], str, str]:
        h, ad = self.hero, self.adult
        skill = self.c(["ride a bike", "swim", "climb the big hill", "tie shoes", "fly a kite", "whistle",
                        "jump rope", "catch a ball"])
        want = f"{h.name} wanted to learn to {skill}."
        fail = self.c([f"{h.He} tried, but {h.he} fell down.", "It was very hard at first.",
                       f"The first time, {h.he} could not do it."])
        doubt = self.say(h, self.c(["I can't do it!", "It is too hard.", "Maybe I am too little."]))
        cheer = self.say(ad, self.c(["Try again. You can do it!", "Everyone falls at first.",
                                     "Take your time. I am here."]))
        win = self.c([f"{h.name} tried again and again. At last, {h.he} could {skill}!",
                      f"The next day, {h.name} tried one more time, and {h.he} did it!"])
        proud = self.say(h, self.c(["Look at me!", "I did it!", "I can do it now!"]), "shouted")
        truth = self.c(["practice makes things easier", "it is good to try again"])
        habit = f"{h.name} never gave up"
        return [f"{want} {fail} {doubt}", cheer, f"{win} {proud}"], truth, habit

    def gift(self) -> tuple[list[str], str, str]:
        h, ad = self.hero, self.adult
        present = self.c(["a card", "a picture", "a cake", "a necklace of flowers", "a little clay cup"])
        plan = f"{h.name} wanted to make {present} for {h.his} {ad.kind}."
        mess = self.c(["But it did not look right.", "Soon there was a big mess on the table.",
                       f"{h.He} spilled paint on the floor."])
        worry = self.say(h, self.c([f"It is not good enough for my {ad.kind}.", "Oh no! It is all wrong!"]))
        help_ = self.c([f"{self.friend.name} helped {h.him} clean up.",
                        f"{h.name} did {h.his} best and finished it."])
        give = self.c([f"When {h.his} {ad.kind} saw it, {ad.he} smiled a big smile.",
                       f"{h.name} gave it to {h.his} {ad.kind}."])
        love = self.say(ad, self.c(["I love it! You made it just for me.", "This is the best gift ever.",
                                    "Thank you. I will keep it forever."]))
        truth = self.c(["a gift made with love is the best gift", "what matters is that you try"])
        habit = f"{h.name} made gifts for everyone"
        return [f"{plan} {mess} {worry}", help_, f"{give} {love}"], truth, habit

    def tell(self) -> str:
        arcs: list[Callable[[], tuple[list[str], str, str]]] = [
            self.lost, self.stuck, self.broken, self.share, self.scared, self.rain, self.new_friend,
            self.hurt_animal, self.learning, self.gift,
        ]
        arc = self.c(arcs)
        # The favourite thing has to suit the problem: you can't throw a blanket onto a roof.
        if arc == self.broken:
            self.toy = self.c(BREAKABLE)
        elif arc == self.stuck:
            self.toy = self.c(THROWABLE)
        self.friend_known = arc != self.new_friend
        intro = f"{self.opening()} {self.likes()}"
        paragraphs = [intro, self.outing()] if self.r.random() < 0.6 else [intro]
        middle, truth, habit = arc()
        story = "\n".join([*paragraphs, *middle])
        return f"{story}\n{self.ending(truth, habit, story)}"


def generate_stories(count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> list[str]:
    """`count` distinct stories from `seed`; the same arguments always give the same stories."""
    r = random.Random(seed)
    stories: list[str] = []
    seen: set[str] = set()
    while len(stories) < count:
        story = _Teller(r).tell()
        if story not in seen:  # rare repeats are redrawn so every story in the corpus is distinct
            seen.add(story)
            stories.append(story)
    return stories
