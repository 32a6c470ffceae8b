"""Embedded vocabularies of the sample world: names with nicknames, surnames, places, products.

Plain Python data, turned into Spark array literals by :mod:`lakecdp.sample.world`. Order matters:
a value is chosen by index from a hash, so appending changes nothing already chosen before it,
but reordering or inserting changes every world.
"""

from __future__ import annotations

# (first name, nicknames as "a|b" or "" when none); UK, Irish and German names
FIRST_NAMES: tuple[tuple[str, str], ...] = (
    ("Robert", "Bob|Rob|Bobby"), ("William", "Bill|Will|Billy"), ("Elizabeth", "Liz|Beth|Lizzie"),
    ("James", "Jim|Jimmy"), ("John", "Jack|Johnny"), ("Margaret", "Maggie|Peggy|Meg"),
    ("Richard", "Dick|Rick|Richie"), ("Thomas", "Tom|Tommy"), ("Catherine", "Kate|Cathy|Kitty"),
    ("Katherine", "Kate|Katie|Kathy"), ("Michael", "Mike|Mick"), ("Christopher", "Chris|Kit"),
    ("Jennifer", "Jen|Jenny"), ("Joseph", "Joe|Joey"), ("Patricia", "Pat|Trish|Patty"),
    ("Edward", "Ed|Ted|Eddie"), ("Alexander", "Alex|Sandy|Xander"), ("Alexandra", "Alex|Sandra|Lexi"),
    ("Daniel", "Dan|Danny"), ("Samuel", "Sam|Sammy"), ("Samantha", "Sam|Sammie"),
    ("Benjamin", "Ben|Benny"), ("Matthew", "Matt"), ("Andrew", "Andy|Drew"), ("Anthony", "Tony|Ant"),
    ("Nicholas", "Nick|Nicky"), ("Jonathan", "Jon|Jonny"), ("Timothy", "Tim|Timmy"),
    ("Stephen", "Steve|Stevie"), ("Steven", "Steve"), ("Peter", "Pete"), ("David", "Dave|Davy"),
    ("Charles", "Charlie|Chuck"), ("Charlotte", "Lottie|Charlie"), ("Frederick", "Fred|Freddie"),
    ("Henry", "Harry|Hal"), ("Harold", "Harry|Hal"), ("Rebecca", "Becky|Becca"),
    ("Victoria", "Vicky|Tori"), ("Susan", "Sue|Susie"), ("Deborah", "Debbie|Deb"),
    ("Christine", "Chris|Chrissie"), ("Abigail", "Abby|Gail"), ("Jessica", "Jess|Jessie"),
    ("Eleanor", "Ellie|Nell"), ("Helen", "Nell"), ("Gregory", "Greg"), ("Lawrence", "Larry|Laurie"),
    ("Leonard", "Leo|Len"), ("Raymond", "Ray"), ("Ronald", "Ron|Ronnie"), ("Donald", "Don|Donny"),
    ("Kenneth", "Ken|Kenny"), ("Gerald", "Gerry"), ("Gerard", "Ger|Gerry"), ("Francis", "Frank|Fran"),
    ("Frances", "Fran|Frankie"), ("Theodore", "Theo|Ted"), ("Philip", "Phil"), ("Phillipa", "Pippa"),
    ("Josephine", "Jo|Josie"), ("Joanne", "Jo"), ("Dorothy", "Dot|Dottie"), ("Barbara", "Babs|Barb"),
    ("Isabella", "Bella|Izzy"), ("Isabel", "Izzy|Bel"), ("Gabriel", "Gabe"), ("Nathaniel", "Nate|Nat"),
    ("Oliver", "Ollie"), ("Zachary", "Zach"), ("Joshua", "Josh"), ("Jacob", "Jake"),
    ("Thomasina", "Tamsin"), ("Teresa", "Tess|Terri"), ("Cornelius", "Con|Neil"),
    ("Donnacha", "Donie"), ("Seán", "Shane"), ("Siobhán", "Shiv"), ("Pádraig", "Paddy"),
    ("Patrick", "Paddy|Pat"), ("Eoin", ""), ("Ciarán", ""), ("Niamh", ""), ("Aoife", ""),
    ("Saoirse", ""), ("Caoimhe", ""), ("Róisín", ""), ("Orla", ""), ("Cillian", ""), ("Oisín", ""),
    ("Declan", "Dec"), ("Fionnuala", "Nuala|Finola"), ("Deirdre", "Dee"), ("Bridget", "Bridie|Biddy"),
    ("Mairead", "Maire"), ("Colm", ""), ("Brendan", "Bren"), ("Kevin", "Kev"), ("Ronan", ""),
    ("Liam", ""), ("Conor", ""), ("Aidan", ""), ("Sinéad", ""), ("Grainne", ""),
    ("Johannes", "Hannes|Jo"), ("Wolfgang", "Wolf"), ("Friedrich", "Fritz"), ("Joachim", "Jochen"),
    ("Jürgen", ""), ("Günther", ""), ("Klaus", ""), ("Dieter", ""), ("Hans", ""), ("Uwe", ""),
    ("Matthias", "Matze"), ("Maximilian", "Max"), ("Sebastian", "Basti"), ("Florian", "Flo"),
    ("Tobias", "Tobi"), ("Stefan", "Steffi"), ("Andreas", "Andi"), ("Christian", "Chris"),
    ("Katharina", "Kathi|Katja"), ("Susanne", "Susi"), ("Gabriele", "Gabi"), ("Ursula", "Uschi|Ulla"),
    ("Annemarie", "Anne"), ("Magdalena", "Lena|Leni"), ("Franziska", "Franzi"), ("Jörg", ""),
    ("Sabine", ""), ("Monika", ""), ("Petra", ""), ("Birgit", ""), ("Heike", ""), ("Jana", ""),
    ("Lukas", ""), ("Jonas", ""), ("Leon", ""), ("Felix", ""), ("Paul", ""), ("Finn", ""),
    ("Emma", ""), ("Mia", ""), ("Hannah", "Hanni"), ("Sophie", "Soph"), ("Lea", ""), ("Lina", ""),
    ("Marie", ""), ("Anna", "Anni"), ("Laura", ""), ("Julia", "Jule"), ("Sarah", ""), ("Lisa", ""),
    ("Olivia", "Liv|Livvy"), ("Amelia", "Millie|Amy"), ("Emily", "Em|Emmy"), ("Grace", "Gracie"),
    ("Chloe", ""), ("Lucy", ""), ("Ella", ""), ("Freya", ""), ("Poppy", ""), ("Ruby", ""),
    ("Evie", ""), ("Daisy", ""), ("Alice", "Ally"), ("Florence", "Flo|Florrie"), ("Matilda", "Tilly"),
    ("Harriet", "Hattie"), ("Georgina", "Georgie|Gina"), ("Georgia", "Georgie"), ("George", "Georgie"),
    ("Arthur", "Art"), ("Noah", ""), ("Leo", ""), ("Oscar", ""), ("Archie", ""), ("Jack", ""),
    ("Harry", ""), ("Charlie", ""), ("Freddie", ""), ("Alfie", ""), ("Theo", ""), ("Mohammed", "Mo"),
    ("Muhammad", "Mo"), ("Ali", ""), ("Omar", ""), ("Aisha", ""), ("Fatima", ""), ("Priya", ""),
    ("Raj", ""), ("Sanjay", ""), ("Anjali", ""), ("Wei", ""), ("Mei", ""), ("Adam", ""), ("Luke", ""),
    ("Mark", ""), ("Paula", ""), ("Claire", ""), ("Karen", ""), ("Sharon", "Shaz"), ("Tracey", ""),
    ("Nicola", "Nicki|Nic"), ("Amanda", "Mandy"), ("Melanie", "Mel"), ("Gillian", "Gill|Jill"),
    ("Louise", "Lou"), ("Rachel", ""), ("Emma-Jane", "EJ"), ("Mary-Kate", ""), ("Ann", "Annie"),
    ("Anne", "Annie"), ("Hazel", ""), ("Iris", ""), ("Ivy", ""), ("Violet", "Vi"), ("Rose", "Rosie"),
    ("Ian", ""), ("Neil", ""), ("Gavin", ""), ("Stuart", "Stu"), ("Graham", ""), ("Malcolm", "Mal"),
    ("Duncan", ""), ("Angus", ""), ("Fergus", "Fergie"), ("Hamish", ""), ("Ewan", ""), ("Callum", "Cal"),
    ("Rhys", ""), ("Gareth", "Gaz"), ("Dylan", ""), ("Owen", ""), ("Evan", ""), ("Carys", ""),
    ("Sian", ""), ("Bethan", "Beth"), ("Megan", "Meg"), ("Cerys", ""),
)

SURNAMES: tuple[str, ...] = (
    "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas", "Johnson",
    "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards", "Hughes", "Green", "Hall",
    "Lewis", "Harris", "Clarke", "Patel", "Jackson", "Wood", "Turner", "Martin", "Cooper", "Hill",
    "Ward", "Morris", "Moore", "Clark", "Lee", "King", "Baker", "Harrison", "Morgan", "Allen",
    "James", "Scott", "Phillips", "Watson", "Davis", "Parker", "Price", "Bennett", "Young", "Griffiths",
    "Mitchell", "Kelly", "Cook", "Carter", "Richardson", "Bailey", "Collins", "Bell", "Shaw", "Murphy",
    "Miller", "Cox", "Richards", "Khan", "Marshall", "Anderson", "Simpson", "Ellis", "Adams", "Singh",
    "Begum", "Wilkinson", "Foster", "Chapman", "Powell", "Webb", "Rogers", "Gray", "Mason", "Ali",
    "Hunt", "Hussain", "Campbell", "Matthews", "Owen", "Palmer", "Holmes", "Mills", "Barnes", "Knight",
    "Lloyd", "Butler", "Russell", "Barker", "Fisher", "Stevens", "Jenkins", "Murray", "Dixon", "Harvey",
    "Graham", "Pearson", "Ahmed", "Fletcher", "Walsh", "Kaur", "Gibson", "Howard", "Andrews", "Stewart",
    "Elliott", "Reynolds", "Saunders", "Payne", "Fox", "Ford", "Pearce", "Day", "Brooks", "West",
    "Lawrence", "Cole", "Atkinson", "Bradley", "Spencer", "Gill", "Dawson", "Ball", "Burton", "O'Brien",
    "Watts", "Rose", "Booth", "Perry", "Ryan", "Grant", "Wells", "Armstrong", "Francis", "Rees",
    "Hayes", "Hart", "Hudson", "Newman", "Barrett", "Webster", "Hunter", "Gregory", "Carr", "Lowe",
    "Page", "Marsh", "Riley", "Dunn", "Woods", "Parsons", "Berry", "Stone", "Reid", "Holland",
    "Hawkins", "Harding", "Porter", "Robertson", "Newton", "Oliver", "Reed", "Kennedy", "Williamson", "Bird",
    "Gardner", "Shah", "Dean", "Lane", "Cooke", "Bates", "Henderson", "Parry", "Burgess", "Bishop",
    "O'Sullivan", "O'Connor", "McCarthy", "Byrne", "O'Neill", "Doyle", "Lynch", "Quinn", "Doherty", "Brennan",
    "Fitzgerald", "Nolan", "Daly", "Gallagher", "Duffy", "Kavanagh", "Flynn", "Dunne", "Connolly", "Power",
    "MacDonald", "McLaughlin", "Ní Bhriain", "Ó Súilleabháin", "Mac Giolla", "Keane", "Moran", "Farrell", "Healy", "Hogan",
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
    "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz", "Zimmermann",
    "Braun", "Krüger", "Hofmann", "Hartmann", "Lange", "Schmitt", "Werner", "Schmitz", "Krause", "Meier",
    "Lehmann", "Schmid", "Schulze", "Maier", "Köhler", "Herrmann", "König", "Walter", "Mayer", "Huber",
    "Kaiser", "Fuchs", "Peters", "Lang", "Scholz", "Möller", "Weiß", "Jung", "Hahn", "Schubert",
    "Vogel", "Friedrich", "Keller", "Günther", "Frank", "Berger", "Winkler", "Roth", "Beck", "Lorenz",
    "Baumann", "Franke", "Albrecht", "Schuster", "Simon", "Ludwig", "Böhm", "Winter", "Kraus", "Martin",
    "Schumacher", "Krämer", "Vogt", "Stein", "Jäger", "Otto", "Sommer", "Groß", "Seidel", "Heinrich",
    "von Bergen", "zu Salm", "de Vries", "Nowak", "Kowalski", "Yilmaz", "Kaya", "Demir", "Öztürk", "Nguyen",
)

# country code -> (free-text spellings in the CRM, Olson zone for web timestamps)
COUNTRIES: dict[str, tuple[tuple[str, ...], str]] = {
    "GB": (("United Kingdom", "UK", "GB", "Great Britain", "England"), "Europe/London"),
    "IE": (("Ireland", "IE", "Republic of Ireland", "Éire"), "Europe/Dublin"),
    "DE": (("Deutschland", "DE", "Germany"), "Europe/Berlin"),
}

# (town, postcode prefix) per country; GB prefixes are outward-code areas, DE the first two PLZ digits
TOWNS: dict[str, tuple[tuple[str, str], ...]] = {
    "GB": (
        ("London", "SW1"), ("London", "E14"), ("London", "N7"), ("Manchester", "M14"),
        ("Birmingham", "B15"), ("Leeds", "LS6"), ("Bristol", "BS8"), ("Sheffield", "S10"),
        ("Liverpool", "L17"), ("Newcastle upon Tyne", "NE2"), ("Nottingham", "NG7"), ("Leicester", "LE2"),
        ("Cardiff", "CF10"), ("Edinburgh", "EH9"), ("Glasgow", "G12"), ("Belfast", "BT9"),
        ("Oxford", "OX4"), ("Cambridge", "CB1"), ("Brighton", "BN2"), ("York", "YO10"),
        ("Norwich", "NR2"), ("Exeter", "EX4"), ("Bath", "BA1"), ("Reading", "RG1"),
    ),
    "IE": (
        ("Dublin", "D02"), ("Dublin", "D04"), ("Dublin", "D06"), ("Cork", "T12"), ("Galway", "H91"),
        ("Limerick", "V94"), ("Waterford", "X91"), ("Kilkenny", "R95"), ("Sligo", "F91"),
        ("Athlone", "N37"), ("Drogheda", "A92"), ("Dundalk", "A91"),
    ),
    "DE": (
        ("Berlin", "10"), ("Berlin", "12"), ("Hamburg", "20"), ("München", "80"), ("Köln", "50"),
        ("Frankfurt am Main", "60"), ("Stuttgart", "70"), ("Düsseldorf", "40"), ("Leipzig", "04"),
        ("Dresden", "01"), ("Hannover", "30"), ("Nürnberg", "90"), ("Bremen", "28"), ("Essen", "45"),
    ),
}

STREETS: dict[str, tuple[str, ...]] = {
    "GB": (
        "High Street", "Station Road", "Church Lane", "Victoria Road", "Green Lane", "Manor Road",
        "Park Avenue", "Queens Road", "Kings Road", "Mill Lane", "The Crescent", "Grange Road",
        "Springfield Road", "Albert Street", "North Street", "London Road", "Chester Road",
        "Windsor Close", "Orchard Way", "Elm Grove", "Beech Drive", "Oak Tree Close",
    ),
    "IE": (
        "Main Street", "Church Road", "Strand Road", "Patrick Street", "O'Connell Street",
        "Griffith Avenue", "Pearse Street", "Seafield Road", "Castle Street", "Bóthar na Trá",
        "Mount Street", "Shop Street", "College Road", "Ballyfermot Road",
    ),
    "DE": (
        "Hauptstraße", "Schulstraße", "Gartenstraße", "Bahnhofstraße", "Dorfstraße", "Bergstraße",
        "Lindenstraße", "Kirchstraße", "Waldstraße", "Ringstraße", "Goethestraße", "Schillerstraße",
        "Am Markt", "Mühlenweg", "Rosenweg", "Friedrichstraße", "Königsallee",
    ),
}

EMAIL_DOMAINS: dict[str, tuple[str, ...]] = {
    "GB": ("gmail.com", "hotmail.co.uk", "yahoo.co.uk", "outlook.com", "btinternet.com", "icloud.com",
           "sky.com"),
    "IE": ("gmail.com", "hotmail.com", "eircom.net", "outlook.ie", "yahoo.ie", "icloud.com"),
    "DE": ("gmail.com", "web.de", "gmx.de", "t-online.de", "outlook.de", "posteo.de"),
}

PRODUCT_CATEGORIES: tuple[str, ...] = (
    "shoes", "outerwear", "knitwear", "shirts", "trousers", "accessories", "bags", "home", "beauty",
    "sport",
)
PRODUCT_ADJECTIVES: tuple[str, ...] = (
    "Classic", "Organic", "Everyday", "Merino", "Waterproof", "Linen", "Recycled", "Slim", "Relaxed",
    "Heritage", "Trail", "City", "Soft", "Cosy", "Lightweight",
)
PRODUCT_NOUNS: dict[str, tuple[str, ...]] = {
    "shoes": ("Trainer", "Boot", "Loafer", "Sandal"),
    "outerwear": ("Parka", "Raincoat", "Gilet", "Bomber"),
    "knitwear": ("Jumper", "Cardigan", "Roll Neck", "Beanie"),
    "shirts": ("Oxford Shirt", "Polo", "T-Shirt", "Flannel Shirt"),
    "trousers": ("Chino", "Jean", "Jogger", "Cord"),
    "accessories": ("Scarf", "Belt", "Wallet", "Gloves"),
    "bags": ("Tote", "Backpack", "Holdall", "Crossbody Bag"),
    "home": ("Throw", "Candle", "Mug Set", "Cushion"),
    "beauty": ("Hand Cream", "Lip Balm", "Face Oil", "Body Wash"),
    "sport": ("Running Tee", "Yoga Mat", "Water Bottle", "Cycling Jacket"),
}
# price range per category, in GBP
PRODUCT_PRICES: dict[str, tuple[float, float]] = {
    "shoes": (45, 180), "outerwear": (60, 320), "knitwear": (30, 140), "shirts": (15, 70),
    "trousers": (30, 110), "accessories": (10, 80), "bags": (25, 220), "home": (8, 90),
    "beauty": (5, 45), "sport": (10, 150),
}

INTERESTS: tuple[str, ...] = (
    "travel", "cooking", "gardening", "football", "running", "cycling", "fashion", "music", "reading",
    "gaming", "photography", "hiking", "yoga", "wine", "diy", "pets", "technology", "film",
)
INCOME_BANDS: tuple[str, ...] = ("<20k", "20-40k", "40-60k", "60-100k", ">100k")

# values real systems type into identifier fields; they must not link people together
JUNK_EMAILS: tuple[str, ...] = ("test@test.com", "noemail@example.com", "none@none.com")
JUNK_PHONES: tuple[str, ...] = ("0000000000", "n/a", "00000 000000", "1234567890")
